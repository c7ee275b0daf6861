"""The real google-cloud-speech async client against a fake Speech gRPC server started here
(insecure channel): success, errors, deadlines, the breaker opening and the offline fallback.
Every call goes out with retry=None and a deadline, so none of this waits on the library's
minutes-long default retry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest

from postroom_speech.audio import Audio
from postroom_speech.engines.base import EngineError, Transcript
from postroom_speech.engines.chain import SpeechChain
from postroom_speech.engines.google import GoogleEngine
from postroom_testing.speech import FakeSpeechServer


class Local:
    """Stands in for the offline engine where only the chain's routing is under test."""

    name = "moonshine"
    model = "local"

    def __init__(self) -> None:
        self.calls = 0

    def supports(self, language: str) -> bool:
        return True

    def describe(self) -> dict[str, object]:
        return {"engine": self.name}

    async def transcribe(self, audio: Audio, *, language: str, words: bool = False,
                         timeout: float | None = None) -> Transcript:  # noqa: ASYNC109
        self.calls += 1
        return Transcript(text="offline text", confidence=0.5, engine=self.name,
                          model=self.model)


def speech_like(seconds: float, rate: int = 8000) -> Audio:
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * 300 * t) * (np.sin(2 * np.pi * 2 * t) > 0))
    return Audio(samples.astype(np.float32), rate, encoding="ULAW", source_rate=rate)


@pytest.fixture
async def fake() -> AsyncIterator[FakeSpeechServer]:
    server = await FakeSpeechServer("please call me back about the invoice").start()
    yield server
    await server.stop()


def engine_for(fake: FakeSpeechServer, **kw: object) -> GoogleEngine:
    return GoogleEngine(endpoint=fake.endpoint, insecure=True, **kw)  # type: ignore[arg-type]


async def test_recognize_sends_telephony_pcm_and_reads_text_confidence_and_words(
        fake: FakeSpeechServer) -> None:
    engine = engine_for(fake)
    try:
        t = await engine.transcribe(speech_like(3.0), language="de-DE", words=True, timeout=10)
    finally:
        await engine.close()
    assert t.text == "please call me back about the invoice"
    assert t.confidence == pytest.approx(0.93) and t.engine == "google"
    assert t.model == "telephony"
    assert t.words is not None and [w.word for w in t.words] == t.text.split()
    assert t.words[1].start_seconds == pytest.approx(0.5)
    [request] = fake.requests
    assert request.config.language_code == "de-DE"
    assert request.config.model == "telephony"
    assert request.config.sample_rate_hertz == 8000
    assert request.config.encoding.name == "LINEAR16"
    assert len(request.audio.content) == 2 * 3 * 8000  # 16-bit PCM of the whole recording


async def test_long_audio_goes_in_pieces_with_word_times_moved_into_place(
        fake: FakeSpeechServer) -> None:
    engine = engine_for(fake, segment_seconds=4.0)
    silence = np.zeros(8000, dtype=np.float32)
    part = speech_like(3.0).samples
    audio = Audio(np.concatenate([part, silence, part, silence, part]), 8000)
    try:
        t = await engine.transcribe(audio, language="en-US", words=True, timeout=10)
    finally:
        await engine.close()
    assert len(fake.requests) == 3
    assert t.text == " ".join([fake.transcript] * 3)
    assert t.words is not None
    starts = [w.start_seconds for w in t.words]
    assert starts == sorted(starts) and starts[-1] > 8.0


async def test_an_error_is_an_engine_error_at_once(fake: FakeSpeechServer) -> None:
    fake.mode = "error"
    engine = engine_for(fake)
    try:
        with pytest.raises(EngineError, match="UNAVAILABLE"):
            await engine.transcribe(speech_like(1.0), language="en-US", timeout=30)
    finally:
        await engine.close()
    assert len(fake.requests) == 1  # no retry


async def test_a_hanging_server_is_a_timeout_at_the_deadline(fake: FakeSpeechServer) -> None:
    fake.mode = "hang"
    engine = engine_for(fake)
    try:
        with pytest.raises(TimeoutError):
            await engine.transcribe(speech_like(1.0), language="en-US", timeout=0.5)
    finally:
        await engine.close()


async def test_failures_open_the_breaker_and_the_offline_engine_answers(
        fake: FakeSpeechServer) -> None:
    local = Local()
    engine = engine_for(fake)
    chain = SpeechChain(engine, local, remote=True, timeout=5, breaker_threshold=2,
                        breaker_ttl=3600)
    try:
        ok = await chain.transcribe(speech_like(1.0), language="en-US")
        assert ok.transcript is not None and ok.transcript.engine == "google"
        assert not ok.fallback and await chain.breaker_state() == "closed"

        fake.mode = "error"
        for _ in range(2):
            out = await chain.transcribe(speech_like(1.0), language="en-US")
            assert out.fallback and out.transcript is not None
            assert out.transcript.engine == "moonshine"
            assert out.errors[0][0] == "google" and "UNAVAILABLE" in out.errors[0][1]
        assert await chain.breaker_state() == "opened"

        # open: Google is not called any more, the fallback answers at once
        calls = len(fake.requests)
        fake.mode = "ok"
        out = await chain.transcribe(speech_like(1.0), language="en-US")
        assert out.fallback and out.transcript is not None
        assert out.errors == [("google", "circuit breaker open")]
        assert len(fake.requests) == calls
        assert local.calls == 3
    finally:
        await engine.close()


async def test_the_breaker_lets_a_trial_through_after_its_ttl_and_closes_on_success(
        fake: FakeSpeechServer) -> None:
    engine = engine_for(fake)
    chain = SpeechChain(engine, Local(), remote=True, timeout=5, breaker_threshold=1,
                        breaker_ttl=0.2)
    try:
        fake.mode = "error"
        await chain.transcribe(speech_like(1.0), language="en-US")
        assert await chain.breaker_state() == "opened"
        fake.mode = "ok"
        # wait for the TTL by watching the breaker, not the clock
        for _ in range(400):
            out = await chain.transcribe(speech_like(1.0), language="en-US")
            if not out.fallback:
                break
            await asyncio.sleep(0.05)  # polling: the TTL is the breaker's, 0.2 s
        assert not out.fallback and out.transcript is not None
        assert out.transcript.engine == "google"
        assert await chain.breaker_state() == "closed"
    finally:
        await engine.close()


async def test_a_stopped_server_is_an_error_and_the_fallback_answers() -> None:
    server = await FakeSpeechServer().start()
    endpoint = server.endpoint
    await server.stop()
    engine = GoogleEngine(endpoint=endpoint, insecure=True)
    chain = SpeechChain(engine, Local(), remote=True, timeout=5)
    try:
        out = await chain.transcribe(speech_like(1.0), language="en-US")
    finally:
        await engine.close()
    assert out.fallback and out.transcript is not None
    assert out.transcript.engine == "moonshine"
    assert out.errors and out.errors[0][0] == "google"


async def test_every_engine_failing_is_an_outcome_with_the_errors(
        fake: FakeSpeechServer) -> None:
    from postroom_speech.engines.moonshine import MoonshineEngine

    fake.mode = "error"
    fake.error_code = grpc.StatusCode.INTERNAL
    engine = engine_for(fake)
    chain = SpeechChain(engine, MoonshineEngine(), remote=True, timeout=5)
    try:
        out = await chain.transcribe(speech_like(1.0), language="de-DE")
    finally:
        await engine.close()
    assert out.transcript is None and out.fallback
    assert out.error is not None
    assert "google: INTERNAL" in out.error and "no offline model for de-DE" in out.error
