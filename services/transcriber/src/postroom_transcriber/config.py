"""transcriber settings: the shared runtime settings plus the engines'."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from postroom_runtime import RuntimeSettings


class TranscriberSettings(RuntimeSettings):
    """Environment variables (upper-case names), e.g. ``TRANSCRIBE_ENGINE=google``."""

    service_name: ClassVar[str] = "transcriber"
    http_port: int = Field(default=8027, ge=0, le=65535)
    # a three-minute voicemail takes about half a minute on one core offline; Google's
    # deadline plus the offline fallback must fit too
    consumer_handler_timeout_seconds: float = Field(default=900.0, gt=0)

    transcribe_engine: Literal["offline", "google"] = Field(
        default="offline",
        description="Preferred engine; 'google' falls back to the offline one")
    transcribe_language: str = Field(
        default="en-US", description="Language when the tenant's route names none "
        "(the seed's GOOGLE_LANGUAGE_CODE)")
    transcribe_timeout_seconds: float = Field(
        default=120.0, gt=0, description="Time limit of one engine call")
    transcribe_words: bool = Field(
        default=False, description="Publish word timings (engines that give them: google)")
    transcribe_max_audio_seconds: float = Field(
        default=600.0, gt=0, description="Longer recordings fail (forwarded untranscribed)")
    transcribe_concurrency: int = Field(
        default=1, ge=1, description="Offline transcriptions at once in this process "
        "(each one ONNX Runtime thread)")
    offline_segment_seconds: float = Field(
        default=8.0, gt=1, description="Longest piece the offline engine is given")
    offline_segment_workers: int = Field(
        default=2, ge=1, le=16, description="Pieces of one recording transcribed at once, "
        "in threads (a recording's latency falls with the cores it gets)")

    google_speech_model: str = Field(default="telephony")
    google_speech_endpoint: str | None = Field(
        default=None, description="host:port instead of speech.googleapis.com")
    google_speech_insecure: bool = Field(
        default=False, description="Plain gRPC to GOOGLE_SPEECH_ENDPOINT, no credentials "
        "(a local fake)")
    google_cloud_project: str | None = Field(
        default=None, description="Quota project (the seed's GOOGLE_PROJECT_ID works too)")
    google_application_credentials: str | None = Field(
        default=None, description="Service-account key file (read by Google's library)")
    breaker_failure_threshold: int = Field(
        default=5, ge=1, description="Google failures in a row that open the breaker")
    breaker_reset_seconds: float = Field(
        default=30.0, gt=0, description="Open breaker: seconds before one trial call")
