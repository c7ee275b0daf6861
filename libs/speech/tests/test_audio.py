"""Decoding every encoding PBXs send, from files made here with soundfile; resampling;
silence segmentation."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import soundfile

from postroom_speech.audio import AudioError, decode, encode_wav, looks_like_audio, resample
from postroom_speech.segment import split_on_silence

RATE = 8000


def tone(seconds: float, freq: float = 440.0, rate: int = RATE, level: float = 0.5
         ) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (level * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def silence(seconds: float, rate: int = RATE) -> np.ndarray:
    # a little line noise: the detector must adapt to it, not expect digital zero
    rng = np.random.default_rng(7)
    return (rng.normal(0, 0.002, int(seconds * rate))).astype(np.float32)


@pytest.mark.parametrize("subtype", ["ULAW", "ALAW", "PCM_16", "PCM_U8", "GSM610",
                                     "IMA_ADPCM", "MS_ADPCM"])
def test_each_pbx_encoding_decodes_to_the_same_sound(subtype: str) -> None:
    signal = tone(1.0)
    data = encode_wav(signal, RATE, subtype=subtype)
    audio = decode(data)
    assert audio.encoding == subtype
    assert audio.container == "WAV"
    assert audio.sample_rate == RATE and audio.channels == 1
    assert abs(audio.duration - 1.0) < 0.05  # ADPCM pads its last block
    n = min(len(signal), len(audio.samples)) - 400
    # lossy codecs: the decoded tone still correlates strongly with what was encoded
    # (GSM shifts the phase a little; compare energy and correlation after a short lag)
    decoded = audio.samples[200:200 + n]
    original = signal[200:200 + n]
    assert 0.5 < np.sqrt(np.mean(decoded ** 2)) / np.sqrt(np.mean(original ** 2)) < 1.5
    best = max(float(np.corrcoef(original[: n - lag], decoded[lag:])[0, 1])
               for lag in range(0, 40))
    assert best > 0.8


def test_stereo_is_mixed_down_and_other_rates_are_kept() -> None:
    left, right = tone(0.5, rate=16000), tone(0.5, rate=16000, level=0.1)
    buf = io.BytesIO()
    soundfile.write(buf, np.stack([left, right], axis=1), 16000, format="WAV",
                    subtype="PCM_16")
    audio = decode(buf.getvalue())
    assert audio.channels == 2 and audio.sample_rate == 16000 and audio.samples.ndim == 1
    assert np.allclose(audio.samples, (left + right) / 2, atol=1e-3)


def test_garbage_is_an_audio_error() -> None:
    with pytest.raises(AudioError):
        decode(b"RIFF\x00\x00\x00\x00WAVEnot really")
    with pytest.raises(AudioError):
        decode(b"%PDF-1.7")


def test_resampling_to_the_engine_rate_keeps_duration_and_pitch() -> None:
    audio = decode(encode_wav(tone(2.0, freq=500), RATE, "ULAW"))
    up = resample(audio, 16000)
    assert up.sample_rate == 16000 and len(up.samples) == 32000
    assert up.source_rate == RATE and up.encoding == "ULAW"
    spectrum = np.abs(np.fft.rfft(up.samples))
    assert abs(np.argmax(spectrum) * 16000 / len(up.samples) - 500) < 5
    assert resample(up, 16000) is up


def test_audio_is_recognised_by_type_name_or_bytes() -> None:
    assert looks_like_audio("audio/x-wav", "msg.bin")
    assert looks_like_audio("application/octet-stream", "Message 0042.WAV")
    assert looks_like_audio(None, None, encode_wav(tone(0.1), RATE))
    assert not looks_like_audio("application/pdf", "invoice.pdf", b"%PDF-1.7")


def test_speech_is_split_at_pauses_and_silence_is_left_out() -> None:
    signal = np.concatenate([silence(1.0), tone(2.0), silence(1.0), tone(1.5, 300),
                             silence(2.0)])
    segments = split_on_silence(signal, RATE, max_seconds=3.0, padding_seconds=0.1)
    spans = [s.seconds(RATE) for s in segments]
    assert len(spans) == 2
    (a0, a1), (b0, b1) = spans
    assert 0.85 <= a0 <= 1.0 and 3.0 <= a1 <= 3.15
    assert 3.85 <= b0 <= 4.0 and 5.5 <= b1 <= 5.65


def test_neighbouring_speech_is_joined_while_it_fits() -> None:
    signal = np.concatenate([tone(1.0), silence(0.5), tone(1.0), silence(0.5), tone(1.0)])
    assert len(split_on_silence(signal, RATE, max_seconds=10.0)) == 1
    assert len(split_on_silence(signal, RATE, max_seconds=2.6)) == 2


def test_long_speech_without_pauses_is_cut_to_fit() -> None:
    signal = tone(20.0) * (1 + 0.5 * np.sin(np.arange(160000) / 2000)).astype(np.float32)
    segments = split_on_silence(signal, RATE, max_seconds=6.0, padding_seconds=0.0)
    assert len(segments) >= 4
    assert all(s.end - s.start <= 6.0 * RATE for s in segments)
    assert segments[0].start == 0 and segments[-1].end >= 20.0 * RATE - 200
    assert all(a.end <= b.start for a, b in itertools.pairwise(segments))


def test_all_silence_gives_no_segment() -> None:
    assert split_on_silence(silence(3.0), RATE) == []
    assert split_on_silence(np.zeros(0, dtype=np.float32), RATE) == []
