"""console settings: the shared runtime settings plus the projection's, the API's and the
WebSocket feed's."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from postroom_runtime import RuntimeSettings


class ConsoleSettings(RuntimeSettings):
    """Environment variables (upper-case names), e.g. ``CONSOLE_ADMIN_KEY=pr_...``."""

    service_name: ClassVar[str] = "console"
    http_port: int = Field(default=8030, ge=0, le=65535)

    console_admin_key: str | None = Field(
        default=None, description="Admin API key, ensured present (hashed) at start under the "
        "name 'admin'; an earlier admin key from this variable is revoked")
    console_batch_size: int = Field(
        default=512, ge=1, le=10_000,
        description="Events the projection applies in one transaction at most")
    console_ready_max_lag: int = Field(
        default=10_000, ge=0,
        description="/health/ready fails while the projection is further behind the stream "
        "than this many events (and while the projector is not running)")
    console_resubscribe_seconds: float = Field(
        default=10.0, gt=0,
        description="Subscribe again from the stored position when the stream is ahead and "
        "nothing arrived for this long (a lost ordered consumer)")
    console_leader_retry_seconds: float = Field(
        default=2.0, gt=0,
        description="A replica that does not project tries to take the projector lock this "
        "often; the projecting one checks its lock's connection as often")
    console_follow_poll_seconds: float = Field(
        default=0.25, gt=0,
        description="A replica that does not project reads new timeline rows for its "
        "WebSocket clients this often")
    console_ws_backlog: int = Field(
        default=1000, ge=1,
        description="Events a WebSocket client is sent on connect at most; beyond it the "
        "client is told to resync")
    console_ws_queue: int = Field(
        default=1000, ge=1,
        description="Messages queued for one WebSocket client; a client that falls further "
        "behind is sent resync and dropped")
    console_mailbox_sync_url: str | None = Field(
        default=None, description="mailbox-sync's HTTP address (e.g. http://mailbox-sync:8031) "
        "for the Mailboxes page; unset: the page says not configured")
    console_mailbox_sync_token: str | None = Field(
        default=None, description="Bearer token of mailbox-sync's /api/v1/accounts "
        "(its MAILBOX_SYNC_API_TOKEN)")
    console_mailbox_sync_token_file: str | None = Field(
        default=None, description="Without CONSOLE_MAILBOX_SYNC_TOKEN: the file mailbox-sync "
        "keeps its token in (its MAILBOX_SYNC_API_TOKEN_FILE), read when the page asks")
    console_static_dir: str | None = Field(
        default=None, description="Folder the dashboard is served from; default: the one in "
        "the package")
