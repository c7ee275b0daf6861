"""The preferred engine, guarded by a circuit breaker, then the fallback.

A cloud engine that fails (error or deadline) counts a failure on its breaker
(``purgatory``: ``threshold`` failures in a row open it; after ``ttl`` seconds one trial call
is let through, and its success closes it). While the breaker is open the cloud engine is not
called at all. Either way the fallback answers, and the outcome says ``fallback=True``. When
every engine fails, the outcome carries no transcript and the errors: the caller still
forwards the voicemail, marked as not transcribed.

The local (offline) engine has no breaker: there is nothing remote to spare.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from ..audio import Audio
from .base import Engine, Transcript, UnsupportedLanguage


@dataclass
class Outcome:
    transcript: Transcript | None
    fallback: bool = False
    errors: list[tuple[str, str]] = field(default_factory=list)  # (engine, error) in order
    seconds: float = 0.0

    @property
    def error(self) -> str | None:
        if self.transcript is not None or not self.errors:
            return None
        return "; ".join(f"{engine}: {error}" for engine, error in self.errors)


class SpeechChain:
    def __init__(self, primary: Engine, fallback: Engine | None = None, *,
                 remote: bool | None = None, timeout: float = 120.0,
                 breaker_threshold: int = 5, breaker_ttl: float = 30.0) -> None:
        self.primary = primary
        self.fallback = fallback
        self.remote = primary.name != "moonshine" if remote is None else remote
        self.timeout = timeout
        self.breakers = AsyncCircuitBreakerFactory(
            default_threshold=breaker_threshold, default_ttl=breaker_ttl,
            # a language the engine lacks says nothing about its health
            exclude=[UnsupportedLanguage])

    @property
    def engines(self) -> list[Engine]:
        return [self.primary] + ([self.fallback] if self.fallback is not None else [])

    async def breaker_state(self) -> str | None:
        """'closed', 'opened' or 'half-opened' for a remote primary; None without a breaker."""
        if not self.remote:
            return None
        breaker = await self.breakers.get_breaker(self.primary.name)
        return str(breaker.context.state)

    async def transcribe(self, audio: Audio, *, language: str, words: bool = False
                         ) -> Outcome:
        started = time.monotonic()
        outcome = Outcome(transcript=None)
        try:
            if self.remote:
                breaker = await self.breakers.get_breaker(self.primary.name)
                async with breaker:
                    outcome.transcript = await self.primary.transcribe(
                        audio, language=language, words=words, timeout=self.timeout)
            else:
                outcome.transcript = await self.primary.transcribe(
                    audio, language=language, words=words, timeout=self.timeout)
        except OpenedState:
            outcome.errors.append((self.primary.name, "circuit breaker open"))
        except Exception as exc:
            outcome.errors.append((self.primary.name, _describe(exc)))
        if outcome.transcript is None and self.fallback is not None:
            outcome.fallback = True
            try:
                outcome.transcript = await self.fallback.transcribe(
                    audio, language=language, words=words, timeout=self.timeout)
            except Exception as exc:
                outcome.errors.append((self.fallback.name, _describe(exc)))
        outcome.seconds = time.monotonic() - started
        return outcome


def _describe(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, TimeoutError):
        return text or "timed out"
    return text if text.startswith(("google:", "no offline")) or not text \
        else f"{type(exc).__name__}: {text}"
