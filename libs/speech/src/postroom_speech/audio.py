"""Decoding the recordings PBXs attach, and resampling them for an engine.

PBXs send WAV files in G.711 µ-law or A-law, linear PCM, GSM 6.10, or IMA/MS ADPCM, usually at
8 kHz mono. ``soundfile`` (libsndfile) decodes all of these; ``soxr`` resamples to the rate an
engine wants. Everything here is pure (bytes in, arrays out) so it runs in a worker thread.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import soundfile
import soxr

AUDIO_EXTENSIONS = (".wav", ".wave")


class AudioError(ValueError):
    """The bytes are not audio this module can decode."""


@dataclass(frozen=True)
class Audio:
    """Mono float32 samples in [-1, 1] and what the file said about itself."""

    samples: np.ndarray = field(repr=False)
    sample_rate: int
    container: str = "WAV"
    encoding: str = "PCM_16"
    source_rate: int = 0
    channels: int = 1

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate if self.sample_rate else 0.0


def looks_like_audio(content_type: str | None, filename: str | None, data: bytes | None = None
                     ) -> bool:
    """An attachment worth decoding: declared ``audio/*``, named ``.wav``, or RIFF/WAVE bytes."""
    if content_type and content_type.lower().split(";")[0].strip().startswith("audio/"):
        return True
    if filename and filename.lower().endswith(AUDIO_EXTENSIONS):
        return True
    return bool(data) and data[:4] == b"RIFF" and data[8:12] == b"WAVE"


def decode(data: bytes) -> Audio:
    """Decode a whole file (WAV and whatever else libsndfile reads) to mono float32."""
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as f:
            info = (f.format, f.subtype, f.samplerate, f.channels)
            # block by block: GSM 6.10 and some ADPCM files are not seekable, so the
            # frame count is unknown up front
            blocks = []
            while True:
                block = f.read(65_536, dtype="float32", always_2d=True)
                if not len(block):
                    break
                blocks.append(block)
            frames = (np.concatenate(blocks) if blocks
                      else np.zeros((0, f.channels), dtype=np.float32))
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioError(f"cannot decode audio: {exc}") from exc
    container, subtype, rate, channels = info
    if rate <= 0 or channels <= 0:
        raise AudioError("audio without a sample rate or channels")
    mono = frames.mean(axis=1) if channels > 1 else frames[:, 0]
    return Audio(np.ascontiguousarray(mono, dtype=np.float32), rate, container=container,
                 encoding=subtype, source_rate=rate, channels=channels)


def resample(audio: Audio, rate: int) -> Audio:
    """The same audio at ``rate`` Hz (soxr, high quality); unchanged when already there."""
    if audio.sample_rate == rate:
        return audio
    samples = soxr.resample(audio.samples, audio.sample_rate, rate, quality="HQ")
    return Audio(np.ascontiguousarray(samples, dtype=np.float32), rate,
                 container=audio.container, encoding=audio.encoding,
                 source_rate=audio.source_rate or audio.sample_rate, channels=audio.channels)


def encode_wav(samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    """WAV bytes of mono ``samples`` (the Google engine sends LINEAR16; tests make fixtures)."""
    buf = io.BytesIO()
    soundfile.write(buf, samples, rate, subtype=subtype, format="WAV")
    return buf.getvalue()
