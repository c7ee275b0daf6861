"""What every speech engine offers: one async call with a time limit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..audio import Audio


class EngineError(Exception):
    """The engine could not transcribe (its service failed, timed out, or refused)."""


class UnsupportedLanguage(EngineError):
    """The engine has no model for the language asked for."""


@dataclass(frozen=True)
class Word:
    word: str
    start_seconds: float
    end_seconds: float
    confidence: float | None = None


@dataclass(frozen=True)
class Transcript:
    text: str
    confidence: float | None
    engine: str
    model: str | None
    words: list[Word] | None = field(default=None)


class Engine(Protocol):
    """A speech-to-text engine. ``transcribe`` raises :class:`EngineError` (or
    :class:`TimeoutError` after ``timeout`` seconds) when it cannot answer."""

    name: str
    model: str | None

    def supports(self, language: str) -> bool: ...

    async def transcribe(self, audio: Audio, *, language: str, words: bool = False,
                         timeout: float | None = None) -> Transcript: ...  # noqa: ASYNC109

    def describe(self) -> dict[str, object]: ...


def base_language(language: str) -> str:
    """'en-US' → 'en'."""
    return language.replace("_", "-").split("-")[0].lower()
