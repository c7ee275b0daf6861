"""The offline engine (Moonshine base, English, from the installed moonshine-cpp package) on
committed recordings made by scripts/make_voicemail_fixtures.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from postroom_speech.audio import decode
from postroom_speech.engines.base import UnsupportedLanguage
from postroom_speech.engines.moonshine import MoonshineEngine, packaged_model_dir
from postroom_speech.wer import normalise, word_error_rate

FIXTURES = Path(__file__).parent / "fixtures" / "voicemail"


@pytest.fixture(scope="module")
def engine() -> MoonshineEngine:
    return MoonshineEngine()


def test_the_model_comes_from_an_installed_package() -> None:
    model_dir = packaged_model_dir()
    assert model_dir is not None
    assert "moonshine_cpp" in str(model_dir)
    assert (model_dir / "encoder_model.ort").is_file()


async def test_a_mulaw_voicemail_is_transcribed_with_its_key_words(
        engine: MoonshineEngine) -> None:
    audio = decode((FIXTURES / "test_ulaw.wav").read_bytes())
    assert audio.encoding == "ULAW" and audio.sample_rate == 8000
    t = await engine.transcribe(audio, language="en-US", timeout=120)
    words = normalise(t.text).split()
    assert {"robert", "invoice", "friday"} <= set(words), t.text
    assert t.engine == "moonshine" and t.model == "moonshine-base-en"
    assert t.confidence is not None and 0 < t.confidence <= 1


async def test_a_longer_gsm_voicemail_comes_out_whole(engine: MoonshineEngine) -> None:
    refs = json.loads((FIXTURES / "references.json").read_text())["tests"]
    audio = decode((FIXTURES / "test_long_gsm.wav").read_bytes())
    assert audio.encoding == "GSM610"
    t = await engine.transcribe(audio, language="en-GB", timeout=120)
    words = set(normalise(t.text).split())
    # beginning, middle and end are all there
    assert {"alice", "maria", "delivery", "morning", "today"} <= words, t.text
    assert word_error_rate([refs["test_long_gsm.wav"]], [t.text]) < 0.5


async def test_another_language_is_refused_not_guessed(engine: MoonshineEngine) -> None:
    audio = decode((FIXTURES / "test_ulaw.wav").read_bytes())
    assert not engine.supports("de-DE")
    with pytest.raises(UnsupportedLanguage, match="no offline model for de-DE"):
        await engine.transcribe(audio, language="de-DE", timeout=10)


def test_segments_transcribed_in_parallel_give_the_same_text_in_order(
        engine: MoonshineEngine) -> None:
    audio = decode((FIXTURES / "test_long_gsm.wav").read_bytes())
    one = engine.model_impl.transcribe(audio, workers=1)
    two = engine.model_impl.transcribe(audio, workers=2)
    assert two == one
    # the recording really is cut in several pieces (else the parallel path would not run)
    from postroom_speech.audio import resample
    from postroom_speech.engines.moonshine import SAMPLE_RATE
    from postroom_speech.segment import segment_audio
    assert len(segment_audio(resample(audio, SAMPLE_RATE).samples, SAMPLE_RATE,
                             max_seconds=8.0)) >= 2
