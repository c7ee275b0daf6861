"""Google Cloud Speech-to-Text (v1) through ``google-cloud-speech``'s async client.

Credentials and project come from the environment as Google's libraries read them
(``GOOGLE_APPLICATION_CREDENTIALS``: a service-account key file; ``GOOGLE_CLOUD_PROJECT`` or
``GOOGLE_PROJECT_ID``: the project billed as quota project). ``GOOGLE_SPEECH_ENDPOINT``
points the client elsewhere (``host:port``); with ``GOOGLE_SPEECH_INSECURE=true`` it talks
plain gRPC without credentials, as to the fake server of the tests.

Every call has a deadline and no automatic retry (``retry=None``): the library's default
retry on UNAVAILABLE can take minutes, and the caller has a breaker and a fallback instead.
Audio is sent as 16-bit PCM at its own rate (8 kHz from a PBX), with the telephony model.
Recordings over ``segment_seconds`` are split on silence and sent as several requests (the
synchronous ``recognize`` takes at most a minute); word offsets are moved back into place.
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from typing import Any

import numpy as np

from ..audio import Audio, resample
from ..segment import split_on_silence
from .base import EngineError, Transcript, Word

MAX_RATE = 16_000


def _seconds(value: Any) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if value is None:
        return 0.0
    return float(getattr(value, "seconds", 0)) + float(getattr(value, "nanos", 0)) / 1e9


class GoogleEngine:
    name = "google"

    def __init__(self, *, model: str = "telephony", endpoint: str | None = None,
                 insecure: bool = False, project: str | None = None,
                 credentials_file: str | None = None, enhanced: bool = True,
                 punctuation: bool = True, segment_seconds: float = 50.0,
                 client: Any = None) -> None:
        self.model = model
        self.endpoint = endpoint or os.environ.get("GOOGLE_SPEECH_ENDPOINT") or None
        self.insecure = insecure
        self.project = (project or os.environ.get("GOOGLE_CLOUD_PROJECT")
                        or os.environ.get("GOOGLE_PROJECT_ID") or None)
        self.credentials_file = (credentials_file
                                 or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS") or None)
        self.enhanced = enhanced
        self.punctuation = punctuation
        self.segment_seconds = segment_seconds
        self._client = client
        self._channel: Any = None

    @property
    def configured(self) -> bool:
        """Something to talk to: an endpoint given, or credentials to reach Google's."""
        return bool(self.endpoint or self.credentials_file or self._client is not None)

    def supports(self, language: str) -> bool:
        return True  # Google has most languages; an unknown one fails as INVALID_ARGUMENT

    def describe(self) -> dict[str, object]:
        return {"engine": self.name, "model": self.model, "configured": self.configured,
                "endpoint": self.endpoint or "speech.googleapis.com",
                "project": self.project}

    def client(self) -> Any:
        if self._client is None:
            from google.api_core.client_options import ClientOptions
            from google.cloud import speech_v1

            if self.insecure and self.endpoint:
                import grpc
                from google.cloud.speech_v1.services.speech.transports import (
                    SpeechGrpcAsyncIOTransport,
                )

                self._channel = grpc.aio.insecure_channel(self.endpoint)
                transport = SpeechGrpcAsyncIOTransport(channel=self._channel)
                self._client = speech_v1.SpeechAsyncClient(transport=transport)
            else:
                options = ClientOptions(api_endpoint=self.endpoint,
                                        quota_project_id=self.project,
                                        credentials_file=self.credentials_file)
                try:
                    self._client = speech_v1.SpeechAsyncClient(client_options=options)
                except Exception as exc:  # no credentials, unreadable key file
                    raise EngineError(f"google: cannot create client: {exc}") from exc
        return self._client

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        self._client = None

    async def transcribe(self, audio: Audio, *, language: str, words: bool = False,
                         timeout: float | None = None) -> Transcript:  # noqa: ASYNC109
        from google.api_core import exceptions as gexc
        from google.cloud import speech_v1

        rate = min(audio.sample_rate, MAX_RATE)
        audio = resample(audio, rate)
        pieces = [(s.start, s.end) for s in split_on_silence(
            audio.samples, rate, max_seconds=self.segment_seconds)] \
            if audio.duration > self.segment_seconds else [(0, len(audio.samples))]
        client = self.client()
        config = speech_v1.RecognitionConfig(
            encoding=speech_v1.RecognitionConfig.AudioEncoding.LINEAR16,
            sample_rate_hertz=rate, audio_channel_count=1, language_code=language,
            model=self.model, use_enhanced=self.enhanced,
            enable_automatic_punctuation=self.punctuation,
            enable_word_time_offsets=words, enable_word_confidence=words,
        )
        texts: list[str] = []
        confidences: list[tuple[float, int]] = []
        timings: list[Word] = []
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        for start, end in pieces:
            pcm = (np.clip(audio.samples[start:end], -1, 1) * 32767).astype("<i2").tobytes()
            left = None if deadline is None else max(0.001, deadline - loop.time())
            try:
                response = await client.recognize(
                    config=config, audio=speech_v1.RecognitionAudio(content=pcm),
                    retry=None, timeout=left)
            except gexc.DeadlineExceeded as exc:
                raise TimeoutError(f"google: deadline exceeded ({timeout:g} s)") from exc
            except gexc.GoogleAPICallError as exc:
                raise EngineError(f"google: {exc.code.name if exc.code else ''} "
                                  f"{exc.message}".strip()) from exc
            except Exception as exc:  # transport errors below the API layer
                raise EngineError(f"google: {type(exc).__name__}: {exc}") from exc
            offset = start / rate
            for result in response.results:
                if not result.alternatives:
                    continue
                best = result.alternatives[0]
                text = best.transcript.strip()
                if text:
                    texts.append(text)
                    confidences.append((float(best.confidence), max(1, len(text.split()))))
                for w in best.words if words else ():
                    timings.append(Word(
                        word=w.word, start_seconds=offset + _seconds(w.start_time),
                        end_seconds=offset + _seconds(w.end_time),
                        confidence=float(w.confidence) if w.confidence else None))
        weight = sum(n for _, n in confidences)
        confidence = (sum(c * n for c, n in confidences) / weight) if weight else None
        if confidence is not None and confidence <= 0:
            confidence = None  # 0 means "not set" in the API
        return Transcript(text=" ".join(texts), confidence=confidence, engine=self.name,
                          model=self.model, words=timings if words else None)
