"""Splitting a recording on silence into segments of a few seconds.

Small speech models answer with nothing for some clips of ten seconds or more, and a
three-minute voicemail is far beyond what they were trained on; cut at pauses, each piece is
transcribed on its own and the texts are joined. The detector is an energy gate over 20 ms
frames: the threshold sits between the recording's noise floor (a low percentile of frame
energy) and its speech level (a high percentile), so it adapts to line noise and gain.
A segment longer than ``max_seconds`` is cut at its longest pause (or, with none, at its
quietest frame) until every piece fits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FRAME_SECONDS = 0.02


@dataclass(frozen=True)
class Segment:
    start: int  # first sample
    end: int  # one past the last sample

    def seconds(self, rate: int) -> tuple[float, float]:
        return self.start / rate, self.end / rate


def frame_energy_db(samples: np.ndarray, frame: int) -> np.ndarray:
    n = len(samples) // frame
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    frames = samples[: n * frame].reshape(n, frame).astype(np.float64)
    rms = np.sqrt(np.mean(frames * frames, axis=1) + 1e-12)
    return (20 * np.log10(rms + 1e-9)).astype(np.float32)


def voiced_frames(energy: np.ndarray, *, floor_percentile: float = 10.0,
                  peak_percentile: float = 95.0, ratio: float = 0.35,
                  min_range_db: float = 12.0, absolute_floor_db: float = -45.0) -> np.ndarray:
    """Boolean mask of frames above the adaptive threshold."""
    if energy.size == 0:
        return np.zeros(0, dtype=bool)
    floor = float(np.percentile(energy, floor_percentile))
    peak = float(np.percentile(energy, peak_percentile))
    if peak - floor < min_range_db:  # no pauses worth the name: all speech or all silence
        return energy > absolute_floor_db
    threshold = max(floor + ratio * (peak - floor), absolute_floor_db)
    return energy > threshold


def _runs(mask: np.ndarray, value: bool) -> list[tuple[int, int]]:
    """[start, end) frame runs where ``mask == value``."""
    runs: list[tuple[int, int]] = []
    start = None
    for i, v in enumerate(mask):
        if v == value and start is None:
            start = i
        elif v != value and start is not None:
            runs.append((start, i))
            start = None
    if start is not None:
        runs.append((start, len(mask)))
    return runs


def split_on_silence(samples: np.ndarray, rate: int, *, max_seconds: float = 6.0,
                     min_silence_seconds: float = 0.25, padding_seconds: float = 0.3,
                     min_speech_seconds: float = 0.2) -> list[Segment]:
    """Segments of speech, each at most ``max_seconds`` long (plus padding), in order.

    Pauses shorter than ``min_silence_seconds`` do not split; leading, trailing and long
    silences are left out; bursts shorter than ``min_speech_seconds`` (clicks) are dropped.
    An all-silent recording gives no segment."""
    frame = max(1, int(rate * FRAME_SECONDS))
    energy = frame_energy_db(samples, frame)
    voiced = voiced_frames(energy)
    # close short pauses: a gap below min_silence is speech
    min_gap = max(1, round(min_silence_seconds / FRAME_SECONDS))
    for start, end in _runs(voiced, False):
        if 0 < start and end < len(voiced) and end - start < min_gap:
            voiced[start:end] = True
    min_speech = max(1, round(min_speech_seconds / FRAME_SECONDS))
    speech = [(s, e) for s, e in _runs(voiced, True) if e - s >= min_speech]
    max_frames = max(1, int(max_seconds / FRAME_SECONDS))
    pieces: list[tuple[int, int]] = []
    for s, e in speech:
        pieces.extend(_fit(s, e, voiced, energy, max_frames))
    # then join neighbours while the joined span fits: longer context, fewer calls
    merged: list[tuple[int, int]] = []
    for s, e in pieces:
        if merged and e - merged[-1][0] <= max_frames:
            merged[-1] = (merged[-1][0], e)
        else:
            merged.append((s, e))
    pieces = merged
    pad = int(padding_seconds * rate)
    total = len(samples)
    out: list[Segment] = []
    for s, e in pieces:
        a = max(0, s * frame - pad)
        b = min(total, e * frame + pad)
        if out and a < out[-1].end:  # padding must not overlap the previous segment
            a = out[-1].end
        if b > a:
            out.append(Segment(a, b))
    return out


def _fit(start: int, end: int, voiced: np.ndarray, energy: np.ndarray,
         max_frames: int) -> list[tuple[int, int]]:
    """Cut [start, end) at pauses (else at its quietest frame) until each piece fits."""
    if end - start <= max_frames:
        return [(start, end)]
    # look for a cut away from the edges: within the middle of the run
    lo = start + max(1, (end - start) // 5)
    hi = end - max(1, (end - start) // 5)
    inner = energy[lo:hi]
    # the quietest 100 ms stretch (a smoothed energy minimum) is the best place to cut
    width = 5
    if inner.size >= width:
        smooth = np.convolve(inner, np.ones(width) / width, mode="same")
        cut = lo + int(np.argmin(smooth))
    else:
        cut = (start + end) // 2
    cut = min(max(cut, start + 1), end - 1)
    return _fit(start, cut, voiced, energy, max_frames) + _fit(cut, end, voiced, energy,
                                                                max_frames)


def segment_audio(samples: np.ndarray, rate: int, **options: float) -> list[np.ndarray]:
    """The samples of each segment (views of ``samples``)."""
    return [samples[s.start:s.end] for s in split_on_silence(samples, rate, **options)]
