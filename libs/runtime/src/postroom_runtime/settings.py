"""Settings from the environment only, with one clear error listing every bad variable."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigError(SystemExit):
    """Bad configuration: the process exits with code 2 and says which variable is wrong."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


class RuntimeSettings(BaseSettings):
    """Settings every service shares. Each service subclasses it and sets its defaults."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, env_file=None)

    # The service's own name, fixed in its code: it names the default store. Renaming the
    # service's telemetry (OTEL_SERVICE_NAME) must not move its data or its consumers.
    service_name: ClassVar[str] = "postroom"

    otel_service_name: str = ""
    otel_exporter_otlp_endpoint: str | None = None
    nats_url: str = "nats://127.0.0.1:4222"
    database_url: str = ""
    blob_backend: Literal["nats", "fs"] = "nats"
    blob_bucket: str = Field(default="postroom-blobs", pattern=r"^[A-Za-z0-9_-]+$")
    blob_fs_root: Path = Path("var/blobs")
    blob_small_max_bytes: int = Field(
        default=0, ge=0, le=1_048_576,
        description="BLOB_BACKEND=nats: blobs up to this size go to the KV bucket "
                    "<BLOB_BUCKET>-small (one round trip); 0 = all in the Object Store",
    )
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    stream_replicas: int = Field(default=1, ge=1, le=5)
    stream_duplicate_window_seconds: int = Field(default=120, ge=1)
    consumer_max_deliver: int = Field(default=5, ge=1)
    consumer_backoff_base_seconds: float = Field(default=1.0, gt=0)
    consumer_backoff_max_seconds: float = Field(default=60.0, gt=0)
    consumer_concurrency: int = Field(default=8, ge=1, description="PostgreSQL stores only")
    consumer_ack_wait_seconds: float = Field(
        default=6.0, gt=0,
        description="JetStream ack wait: a killed process's messages come back after this; "
                    "a running handler keeps its message with in_progress heartbeats",
    )
    consumer_handler_timeout_seconds: float = Field(
        default=300.0, gt=0, description="Time limit of one handler attempt (then retried)",
    )
    outbox_poll_seconds: float = Field(
        default=2.0, gt=0, description="The outbox relay also looks for new rows this often",
    )
    prune_interval_seconds: float = Field(
        default=3600.0, gt=0, description="How often processed_messages and outbox are pruned",
    )
    processed_retention_seconds: float = Field(
        default=31 * 24 * 3600.0, gt=0,
        description="Idempotency rows kept this long: past the events' and dead letters' "
                    "retention, so nothing a stream can still deliver is processed twice",
    )
    outbox_retention_seconds: float = Field(
        default=24 * 3600.0, gt=0, description="Published outbox rows kept this long",
    )
    publish_timeout_seconds: float = Field(default=5.0, gt=0)
    worker_processes: int = Field(
        default=1, ge=0, le=64,
        description="Processes for CPU-bound work (ServiceRuntime.run_cpu, e.g. parsing); "
                    "0 = a thread of the service process, which cannot be stopped",
    )

    def model_post_init(self, __context: object) -> None:
        if not self.otel_service_name:
            self.otel_service_name = self.service_name
        if not self.database_url:
            name = self.service_name.replace("-", "_")
            self.database_url = f"sqlite+aiosqlite:///var/{name}.db"


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S]) -> S:
    """Build settings from the environment; raise ConfigError naming each bad variable."""
    try:
        return cls()
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = "_".join(str(p) for p in err["loc"]).upper() or "?"
            value = err.get("input")
            shown = f" (got {value!r})" if isinstance(value, str | int | float) else ""
            lines.append(f"  {name}: {err['msg']}{shown}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
