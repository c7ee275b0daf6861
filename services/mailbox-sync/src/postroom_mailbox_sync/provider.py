"""Provider push with incremental history, as Gmail's watch/history API works (and as the
FakeMail of seed 004 describes): the provider notifies a signed webhook with its newest
history id; we fetch the history since the last id we stored and read each added message raw.

Protocol (the provider's REST API under the account's ``host``; bearer token = the account's
``oauth_token``; ``{user}`` = its ``username``)::

    GET  /users/{user}/profile                      -> {"historyId": "..."}
    GET  /users/{user}/history?startHistoryId=N     -> {"history": [{"id", "messagesAdded":
                                                        [{"message": {"id"}}]}],
                                                        "historyId", "nextPageToken"?}
                                                       404 when N is older than the provider
                                                       keeps: a full resync is needed
    GET  /users/{user}/messages?maxResults=N        -> {"messages": [{"id"}], newest first,
                                                        "nextPageToken"?}
    GET  /users/{user}/messages/{id}?format=raw     -> {"id", "raw": base64url}
    POST /users/{user}/watch {"webhook_url", "secret"}  -> {"historyId"}

Notification to us: ``POST /api/v1/push/{account id}`` with ``{"emailAddress", "historyId"}``,
signed as the inbound-parse endpoint (``X-Postroom-Timestamp``, ``X-Postroom-Signature``) with
the account's ``webhook_secret``. A notification only wakes the account's sync; the sync also
runs every ``MAILBOX_SYNC_PROVIDER_POLL_SECONDS`` in case a notification is lost.

A history id the provider no longer knows (404) is never skipped silently: the newest
``MAILBOX_SYNC_RESYNC_MAX_MESSAGES`` messages are read again (mail already published is
recognised by its key), the account's status says a full resync happened and whether it was
cut at the bound.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response

from postroom_runtime import ServiceRuntime, cancel_and_wait

from .accounts import AccountService
from .config import MailboxSyncSettings
from .handlers import SIGNATURE_HEADER, TIMESTAMP_HEADER, Account, backoff, check_signature
from .ingest import Ingestor
from .metrics import Metrics
from .store import position, save_position

log = logging.getLogger("postroom_mailbox_sync")

FOLDER = "*"  # a provider account's one position row


class HistoryGone(Exception):
    """The provider no longer has the history from the stored id on."""


class ProviderClient:
    def __init__(self, account: Account, timeout: float) -> None:
        self.user = account.username
        self.http = httpx.AsyncClient(
            base_url=account.host, timeout=timeout, trust_env=False, verify=account.tls_verify,
            headers={"Authorization": f"Bearer {account.secret}"})

    async def _get(self, path: str, **params: Any) -> Any:
        response = await self.http.get(f"/users/{self.user}{path}", params=params)
        if response.status_code == 404 and path == "/history":
            raise HistoryGone(response.text[:200])
        response.raise_for_status()
        return response.json()

    async def profile_history_id(self) -> str:
        return str((await self._get("/profile"))["historyId"])

    async def history(self, start: str) -> tuple[list[str], str]:
        """Ids of the messages added since ``start`` (in order), and the newest history id."""
        ids: list[str] = []
        page: str | None = None
        newest = start
        while True:
            params: dict[str, Any] = {"startHistoryId": start}
            if page:
                params["pageToken"] = page
            body = await self._get("/history", **params)
            for record in body.get("history", []):
                for added in record.get("messagesAdded", []):
                    message_id = str(added["message"]["id"])
                    if message_id not in ids:
                        ids.append(message_id)
            newest = str(body.get("historyId", newest))
            page = body.get("nextPageToken")
            if not page:
                return ids, newest

    async def newest_messages(self, limit: int) -> tuple[list[str], bool]:
        """Up to ``limit`` newest message ids (newest first); True when there are more."""
        ids: list[str] = []
        page: str | None = None
        while len(ids) < limit:
            params: dict[str, Any] = {"maxResults": min(500, limit - len(ids))}
            if page:
                params["pageToken"] = page
            body = await self._get("/messages", **params)
            ids.extend(str(m["id"]) for m in body.get("messages", []))
            page = body.get("nextPageToken")
            if not page:
                return ids[:limit], False
        return ids[:limit], True

    async def raw(self, message_id: str) -> bytes:
        body = await self._get(f"/messages/{message_id}", format="raw")
        data = body["raw"]
        return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))

    async def watch(self, webhook_url: str, secret: str) -> None:
        response = await self.http.post(f"/users/{self.user}/watch",
                                        json={"webhook_url": webhook_url, "secret": secret})
        response.raise_for_status()

    async def close(self) -> None:
        await self.http.aclose()


class ProviderAccount:
    """One provider account: a task that syncs on every notification and every poll."""

    def __init__(self, sync: ProviderSync, account: Account) -> None:
        self.sync_service = sync
        self.account = account
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.status: dict[str, Any] = {
            "folder": FOLDER, "state": "starting", "mode": "push", "last_error": None,
            "last_error_at": None, "last_sync_at": None, "last_notification_at": None,
            "last_full_resync": None, "ingested": 0, "duplicates": 0, "position": {}}

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=f"provider:{self.account.id}")

    async def stop(self) -> None:
        if self.task is not None:
            # not suppress(BaseException): that would swallow a cancellation of the caller too
            await cancel_and_wait(self.task)

    async def run(self) -> None:
        s = self.sync_service.settings
        client = ProviderClient(self.account, s.imap_timeout_seconds)
        attempt = 0
        try:
            if s.mailbox_sync_public_url and self.account.webhook_secret:
                url = f"{s.mailbox_sync_public_url.rstrip('/')}/api/v1/push/{self.account.id}"
                with contextlib.suppress(Exception):
                    await client.watch(url, self.account.webhook_secret)
            while True:
                try:
                    self.status["state"] = "syncing"
                    await self.sync(client)
                    self.status["state"] = "push"
                    self.status["last_error"] = None
                    attempt = 0
                    wait = s.mailbox_sync_provider_poll_seconds
                except Exception as exc:
                    attempt += 1
                    self.status.update(state="error", last_error=f"{type(exc).__name__}: {exc}",
                                       last_error_at=datetime.now(UTC).isoformat())
                    log.warning("provider sync failed", extra={
                        "account": self.account.id, "error": str(exc)})
                    wait = backoff(attempt, s.imap_backoff_base_seconds,
                                   s.imap_backoff_max_seconds)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), wait)
                self.wake.clear()
        finally:
            await client.close()

    async def sync(self, client: ProviderClient) -> None:
        svc = self.sync_service
        store = svc.runtime.store
        async with store.sessions() as session:
            stored = await position(session, self.account.id, FOLDER)
        start = stored["history_id"] if stored else None
        if not start:
            newest = await client.profile_history_id()  # from now on
            await self._save(newest)
            return
        try:
            ids, newest = await client.history(start)
            kind = "incremental"
        except HistoryGone:
            newest = await client.profile_history_id()  # before listing: nothing falls between
            limit = svc.settings.mailbox_sync_resync_max_messages
            ids, more = await client.newest_messages(limit)
            ids.reverse()  # oldest first
            kind = "full_resync"
            self.status["last_full_resync"] = {
                "at": datetime.now(UTC).isoformat(), "from_history_id": start,
                "messages": len(ids), "cut_at_bound": more}
            log.warning("history id too old: full resync", extra={
                "account": self.account.id, "messages": len(ids), "cut_at_bound": more})
        svc.metrics.history.labels(kind).inc()
        for message_id in ids:
            raw = await client.raw(message_id)
            result = await svc.ingestor.ingest(
                raw, source="webhook", tenant=self.account.tenant, mailbox=self.account.mailbox,
                recipient=self.account.address, tls=self.account.host.startswith("https://"),
                account_id=self.account.id)
            self.status["duplicates" if result.duplicate else "ingested"] += 1
        await self._save(newest)

    async def _save(self, history_id: str) -> None:
        async with self.sync_service.runtime.store.transaction() as session:
            await save_position(session, self.account.id, FOLDER, history_id=history_id)
        self.status["last_sync_at"] = datetime.now(UTC).isoformat()
        self.status["position"] = {"history_id": history_id}


class ProviderSync:
    def __init__(self, runtime: ServiceRuntime, settings: MailboxSyncSettings,
                 accounts: AccountService, ingestor: Ingestor, metrics: Metrics) -> None:
        self.runtime = runtime
        self.settings = settings
        self.accounts = accounts
        self.ingestor = ingestor
        self.metrics = metrics
        self.running: dict[str, ProviderAccount] = {}
        accounts.on_provider.append(self._start)
        accounts.on_halt.append(self._halt)
        accounts.provider_status = self.status

    def _start(self, account: Account) -> None:
        worker = ProviderAccount(self, account)
        self.running[account.id] = worker
        worker.start()

    async def _halt(self, account_id: str) -> None:
        worker = self.running.pop(account_id, None)
        if worker is not None:
            await worker.stop()

    def status(self, account_id: str) -> dict[str, Any] | None:
        worker = self.running.get(account_id)
        return dict(worker.status) if worker is not None else None

    async def stop(self, _: ServiceRuntime) -> None:
        for account_id in list(self.running):
            await self._halt(account_id)

    def add_routes(self, app: FastAPI) -> None:
        @app.post("/api/v1/push/{account_id}", status_code=204)
        async def push(account_id: str, request: Request) -> Response:
            from .api import ApiProblem

            worker = self.running.get(account_id)
            account = self.accounts.accounts.get(account_id)
            if worker is None or account is None or not account.webhook_secret:
                raise ApiProblem(404, "Not found", f"no provider account {account_id!r}")
            body = await request.body()
            why = check_signature(
                account.webhook_secret, request.headers.get(TIMESTAMP_HEADER),
                request.headers.get(SIGNATURE_HEADER), body, now=time.time(),
                tolerance=self.settings.mailbox_sync_inbound_tolerance_seconds)
            if why is not None:
                raise ApiProblem(401, "Bad signature", why)
            try:
                notice = json.loads(body)
                history_id = str(notice["historyId"])
            except (ValueError, KeyError, TypeError):
                raise ApiProblem(422, "Invalid notification",
                                 'expected {"emailAddress": ..., "historyId": ...}') from None
            worker.status["last_notification_at"] = datetime.now(UTC).isoformat()
            worker.status["notified_history_id"] = history_id
            worker.wake.set()
            return Response(status_code=204)
