"""Building the engine chain from settings (the service) or the environment (the CLI)."""

from __future__ import annotations

import os

from .engines.chain import SpeechChain
from .engines.google import GoogleEngine
from .engines.moonshine import MoonshineEngine

ENGINES = ("offline", "google")


def build_chain(engine: str = "offline", *, timeout: float = 120.0,
                breaker_threshold: int = 5, breaker_ttl: float = 30.0,
                google_model: str = "telephony", google_endpoint: str | None = None,
                google_insecure: bool = False, offline_segment_seconds: float = 8.0,
                offline_concurrency: int = 1, offline_segment_workers: int = 1,
                offline: MoonshineEngine | None = None) -> SpeechChain:
    """``offline``: the Moonshine engine alone. ``google``: Google first, behind a breaker,
    then the offline engine (fallback=True on the events it answers)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; one of {', '.join(ENGINES)}")
    local = offline or MoonshineEngine(max_segment_seconds=offline_segment_seconds,
                                       concurrency=offline_concurrency,
                                       segment_workers=offline_segment_workers)
    if engine == "offline":
        return SpeechChain(local, None, remote=False, timeout=timeout)
    google = GoogleEngine(model=google_model, endpoint=google_endpoint,
                          insecure=google_insecure)
    return SpeechChain(google, local, remote=True, timeout=timeout,
                       breaker_threshold=breaker_threshold, breaker_ttl=breaker_ttl)


def chain_from_environment() -> SpeechChain:
    """``TRANSCRIBE_ENGINE`` and the ``GOOGLE_*`` variables, as the service reads them."""
    env = os.environ.get
    return build_chain(
        env("TRANSCRIBE_ENGINE", "offline"),
        timeout=float(env("TRANSCRIBE_TIMEOUT_SECONDS", "120")),
        google_model=env("GOOGLE_SPEECH_MODEL", "telephony"),
        google_endpoint=env("GOOGLE_SPEECH_ENDPOINT") or None,
        google_insecure=env("GOOGLE_SPEECH_INSECURE", "false").lower() in ("1", "true", "yes"),
        offline_segment_workers=int(env("OFFLINE_SEGMENT_WORKERS", "2")),
    )
