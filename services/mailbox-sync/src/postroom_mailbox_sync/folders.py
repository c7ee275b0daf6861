"""One watched folder of one IMAP account, kept in sync forever: connect, select, read what is
new since the stored position, then IDLE (or poll) and read again; on any failure close,
back off (capped, jittered) and reconnect. The status it keeps is what the API and
``/health/ready`` show.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from postroom_runtime import cancel_and_wait

from .handlers import Account, FolderState, backoff, horizon
from .imap import AuthFailed, ConnectionLost, ImapFailure, ImapSession

log = logging.getLogger("postroom_mailbox_sync")


@dataclass
class FolderStatus:
    folder: str
    state: str = "starting"  # connecting, syncing, idle, polling, backoff, error, stopped
    mode: str | None = None  # idle | poll, once connected
    last_error: str | None = None
    last_error_at: datetime | None = None
    last_sync_at: datetime | None = None
    connected_since: datetime | None = None
    next_retry_at: datetime | None = None
    reconnects: int = 0
    ingested: int = 0
    duplicates: int = 0
    position: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        def at(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "folder": self.folder, "state": self.state, "mode": self.mode,
            "last_error": self.last_error, "last_error_at": at(self.last_error_at),
            "last_sync_at": at(self.last_sync_at), "connected_since": at(self.connected_since),
            "next_retry_at": at(self.next_retry_at), "reconnects": self.reconnects,
            "ingested": self.ingested, "duplicates": self.duplicates,
            "position": self.position,
        }


class FolderWorker:
    """Keeps one folder of one account in sync, forever (until cancelled)."""

    def __init__(self, sync: Any, account: Account, folder: str) -> None:
        self.sync_service = sync  # ImapSync (app wiring): settings, ingestor, store, metrics
        self.settings = sync.settings
        self.account = account
        self.folder = folder
        self.status = FolderStatus(folder=folder)
        self.wake = asyncio.Event()  # a poll now (tests, the API)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=f"imap:{self.account.id}:{self.folder}")

    async def stop(self) -> None:
        if self.task is not None:
            # not suppress(BaseException): that would swallow a cancellation of the caller too
            await cancel_and_wait(self.task)
        self.status.state = "stopped"

    def _failed(self, message: str) -> None:
        self.status.state = "error"
        self.status.last_error = message[:500]
        self.status.last_error_at = datetime.now(UTC)
        self.status.connected_since = None

    async def run(self) -> None:
        s = self.settings
        metrics = self.sync_service.metrics
        attempt = 0
        while True:
            session = ImapSession(self.account, s.imap_timeout_seconds, s.imap_ca_file)
            try:
                # after a failure the folder stays in "error" (with its last error) until the
                # reconnect has selected the folder again
                self.status.state = "connecting" if self.status.last_error is None else "error"
                await session.open()
                metrics.connects.labels("ok").inc()
                self.status.connected_since = datetime.now(UTC)
                await session.select(self.folder)
                attempt = 0
                await self.sync(session)
                self.status.last_error = None
                use_idle = (self.account.mode != "poll" and s.imap_idle and session.has("IDLE"))
                self.status.mode = "idle" if use_idle else "poll"
                if self.account.mode == "idle" and not use_idle:
                    log.warning("IDLE unavailable: polling",
                                extra={"account": self.account.id, "folder": self.folder})
                refresh_at = time.monotonic() + s.imap_refresh_seconds
                while time.monotonic() < refresh_at:
                    if use_idle:
                        self.status.state = "idle"
                        reason = await session.idle(s.imap_idle_renew_seconds,
                                                    s.imap_watchdog_seconds)
                        metrics.idle_cycles.labels(reason).inc()
                    else:
                        self.status.state = "polling"
                        self.wake.clear()
                        with contextlib.suppress(TimeoutError):
                            await session.bounded(self.wake.wait(),
                                                  timeout=s.email_check_interval)
                        reason = "poll"
                    if (reason != "push" or time.monotonic() - session.selected_at
                            >= s.imap_watchdog_seconds):
                        # SELECT again, not STATUS or NOOP: a server may keep the session's
                        # view of a folder deleted and created again under it (Dovecot answers
                        # STATUS of the selected folder from that view, and pushes nothing);
                        # a new SELECT shows the folder as it is, and sync() re-indexes it
                        # when its UIDVALIDITY changed. A folder that is gone fails here.
                        await session.select(self.folder)
                    await self.sync(session)
                # a fresh connection now and then: the last resort for a server that keeps a
                # stale view of the folder even after a new SELECT
                await session.close()
                metrics.refreshes.inc()
                continue
            except asyncio.CancelledError:
                await session.close()
                raise
            except AuthFailed as exc:
                metrics.connects.labels("auth_failed").inc()
                self._failed(str(exc))
                log.warning("IMAP login refused", extra={
                    "account": self.account.id, "folder": self.folder, "error": str(exc)})
            except Exception as exc:
                if session.selected is None:
                    metrics.connects.labels("error").inc()
                message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                self._failed(message)
                log.warning("IMAP connection failed; reconnecting", extra={
                    "account": self.account.id, "folder": self.folder, "error": message})
            await session.close()
            attempt += 1
            self.status.reconnects += 1
            delay = backoff(attempt, s.imap_backoff_base_seconds, s.imap_backoff_max_seconds)
            self.status.next_retry_at = datetime.fromtimestamp(time.time() + delay, UTC)
            await asyncio.sleep(delay)
            self.status.next_retry_at = None

    async def sync(self, session: ImapSession) -> None:
        """Read what is new since the stored position (first sync and a changed UIDVALIDITY:
        from the horizon, every mail already published recognised by its key)."""
        svc = self.sync_service
        state = session.selected
        assert state is not None
        self.status.state = "syncing"
        account, folder = self.account, self.folder
        stored = await svc.position(account.id, folder)
        if stored is None or stored["uidvalidity"] != state.uidvalidity:
            if stored is not None:
                log.warning("UIDVALIDITY changed: re-indexing the folder", extra={
                    "account": account.id, "folder": folder,
                    "old": stored["uidvalidity"], "new": state.uidvalidity})
            since = horizon(account.since, self.settings.imap_first_sync_days,
                            datetime.now(UTC))
            uids = await session.uids_since(since) if since is not None else []
            await self._read(session, state, uids)
            await svc.save_position(account.id, folder, uidvalidity=state.uidvalidity,
                                    uidnext=max(state.uidnext or 1, (max(uids) + 1) if uids
                                                else 1),
                                    highestmodseq=state.highestmodseq, keep_higher=True)
        else:
            first = stored["uidnext"] or 1
            await self._read(session, state, await session.uids_from(first))
        self.status.last_sync_at = datetime.now(UTC)
        self.status.position = await svc.public_position(account.id, folder)

    async def _read(self, session: ImapSession, state: FolderState, uids: list[int]) -> None:
        svc = self.sync_service
        batch = self.settings.imap_fetch_batch
        todo = [uid for uid in sorted(uids)
                if not await svc.known_uid(self.account.id, self.folder, state.uidvalidity, uid)]
        for start in range(0, len(todo), batch):
            for message in sorted(await session.fetch(todo[start:start + batch]),
                                  key=lambda m: m.uid):
                result = await svc.ingest_imap(self.account, self.folder, state, message)
                if result.duplicate:
                    self.status.duplicates += 1
                    continue
                self.status.ingested += 1
                await self._after_ingest(session, message.uid)

    async def _after_ingest(self, session: ImapSession, uid: int) -> None:
        """Flag and move a published mail. A refusal (no such folder, read-only mailbox) is
        reported in the status and logged, not retried: the mail is published, and a
        reconnect would not change the server's answer."""
        account = self.account
        flags = (["\\Seen"] if account.mark_seen else []) + ([account.flag] if account.flag
                                                              else [])
        try:
            if flags:
                await session.add_flags(uid, flags)
            if account.move_to:
                await session.move(uid, account.move_to)
        except ImapFailure as exc:
            if isinstance(exc, ConnectionLost):
                raise
            self.status.last_error = f"after ingest of UID {uid}: {exc}"[:500]
            self.status.last_error_at = datetime.now(UTC)
            log.warning("flag or move after ingest refused", extra={
                "account": account.id, "folder": self.folder, "error": str(exc)})
