"""A fake Google Cloud Speech-to-Text v1 server for tests: real gRPC (grpcio, asyncio) on a
free loopback port, speaking the ``google-cloud-speech`` package's own request and response
types, so the real client (given an insecure channel) talks to it as to Google.

``mode`` says how it answers ``Recognize``: ``"ok"`` (``transcript`` with ``confidence`` and
one timing per word), ``"error"`` (``error_code``, e.g. UNAVAILABLE), ``"hang"`` (no answer
until the client's deadline). ``requests`` keeps every request it got.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from .procs import free_port

METHOD = "/google.cloud.speech.v1.Speech/Recognize"


class FakeSpeechServer:
    def __init__(self, transcript: str = "hello this is a test", confidence: float = 0.93
                 ) -> None:
        self.transcript = transcript
        self.confidence = confidence
        self.mode = "ok"
        self.error_code = grpc.StatusCode.UNAVAILABLE
        self.requests: list[Any] = []
        self.port = 0
        self._server: grpc.aio.Server | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _recognize(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        from google.cloud.speech_v1 import types

        self.requests.append(request)
        if self.mode == "error":
            await context.abort(self.error_code, "fake: service unavailable")
        if self.mode == "hang":
            await asyncio.sleep(3600)
        words = []
        if request.config.enable_word_time_offsets:
            for i, word in enumerate(self.transcript.split()):
                words.append(types.WordInfo(
                    word=word, start_time={"seconds": i // 2, "nanos": (i % 2) * 500_000_000},
                    end_time={"seconds": (i + 1) // 2, "nanos": ((i + 1) % 2) * 500_000_000},
                    confidence=self.confidence))
        return types.RecognizeResponse(results=[types.SpeechRecognitionResult(
            alternatives=[types.SpeechRecognitionAlternative(
                transcript=self.transcript, confidence=self.confidence, words=words)],
            language_code=request.config.language_code)])

    async def start(self, port: int | None = None) -> FakeSpeechServer:
        from google.cloud.speech_v1 import types

        self.port = port or self.port or free_port()
        handler = grpc.method_handlers_generic_handler("google.cloud.speech.v1.Speech", {
            "Recognize": grpc.unary_unary_rpc_method_handler(
                self._recognize,
                request_deserializer=types.RecognizeRequest.deserialize,
                response_serializer=types.RecognizeResponse.serialize),
        })
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers((handler,))
        self._server.add_insecure_port(self.endpoint)
        await self._server.start()
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None
