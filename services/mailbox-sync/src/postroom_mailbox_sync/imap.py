"""The IMAP client of one watched folder (``folders.py`` runs it): IDLE where the server has it,
polling elsewhere.

Every wait is bounded: a command by ``IMAP_TIMEOUT_SECONDS``; an IDLE by
``IMAP_WATCHDOG_SECONDS`` of silence, after which it is ended with DONE, whose tagged answer is
the liveness probe, and started again (so it is also renewed long before the 29 minutes of RFC
2177); a connection the server closes is noticed at once (the protocol's ``connection_lost``).
On any failure ``folders.py`` closes the connection and reconnects with capped, jittered backoff.

aioimaplib speaks the protocol; STARTTLS, which it lacks, is done here on its transport.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from aioimaplib import aioimaplib

from postroom_runtime import cancel_and_wait

from .handlers import (
    Account,
    FolderState,
    imap_date,
    is_auth_failure,
    parse_fetch,
    parse_search,
    parse_select,
)

log = logging.getLogger("postroom_mailbox_sync")
T = TypeVar("T")


class ImapFailure(Exception):
    """The server answered NO or BAD, or something unexpected."""


class AuthFailed(ImapFailure):
    """LOGIN or AUTHENTICATE was refused."""


class ConnectionLost(ImapFailure):
    """The server closed the connection."""


def _quoted(folder: str) -> str:
    return '"' + folder + '"'  # names with '"' or '\\' are refused when the account is added


class ImapSession:
    """One authenticated IMAP connection; every call bounded by ``timeout``."""

    def __init__(self, account: Account, timeout: float, ca_file: Path | None = None) -> None:
        self.account = account
        self.timeout = timeout
        self.ca_file = ca_file
        self.lost = asyncio.Event()
        self.client: aioimaplib.IMAP4 | None = None
        self.selected: FolderState | None = None
        self.selected_at = 0.0  # time.monotonic() of the last SELECT
        self.capabilities: set[str] = set()

    @property
    def proto(self) -> aioimaplib.IMAP4ClientProtocol:
        assert self.client is not None
        return self.client.protocol

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self.ca_file is not None:
            context.load_verify_locations(cafile=str(self.ca_file))
        if not self.account.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def bounded(self, aw: Awaitable[T], timeout: float | None = None) -> T:  # noqa: ASYNC109
        """``aw`` within ``timeout`` (default: the command timeout), or ``TimeoutError``;
        ``ConnectionLost`` as soon as the connection drops."""
        task = asyncio.ensure_future(aw)
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            done, _ = await asyncio.wait({task, lost}, timeout=timeout or self.timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if task in done:
            return task.result()
        await cancel_and_wait(task)
        if lost in done:
            raise ConnectionLost("the server closed the connection")
        raise TimeoutError(f"no answer within {timeout or self.timeout:g}s")

    async def open(self) -> None:
        account = self.account
        context = self._ssl_context() if account.security != "none" else None

        def on_lost(_: Exception | None) -> None:
            self.lost.set()

        self.client = aioimaplib.IMAP4(
            host=account.host, port=account.port, timeout=self.timeout, conn_lost_cb=on_lost,
            ssl_context=context if account.security == "ssl" else None)
        await self.bounded(self.client.wait_hello_from_server())
        if account.security == "starttls":
            assert context is not None
            await self._starttls(context)
        if account.auth == "xoauth2":
            response = await self._xoauth2()
        else:
            response = await self.bounded(self.proto.login(account.username, account.secret))
        if response.result != "OK":
            raise AuthFailed(f"authentication failed: {is_auth_failure(response.lines)}")
        await self.bounded(self.proto.capability())
        self.capabilities = {c.upper() for c in self.proto.capabilities}
        if "CONDSTORE" in self.capabilities and "ENABLE" in self.capabilities:
            await self.bounded(self.proto.simple_command("ENABLE", "CONDSTORE"))

    async def _xoauth2(self) -> Any:
        """AUTHENTICATE XOAUTH2 with the initial response. A server refusing the token sends
        a challenge (its JSON error) and waits for an empty line before its NO; aioimaplib
        would leave that unanswered until the timeout."""
        proto = self.proto
        account = self.account
        sasl = base64.b64encode(
            f"user={account.username}\1auth=Bearer {account.secret}\1\1".encode()).decode()
        command = aioimaplib.Command("AUTHENTICATE", proto.new_tag(), "XOAUTH2", sasl,
                                     loop=proto.loop)
        task = asyncio.ensure_future(proto.execute(command, scrub=account.secret))

        async def answer_challenge() -> None:
            while not task.done():
                if any(isinstance(line, bytes) and line.startswith(b"+")
                       for line in command.response.lines):
                    proto.send("")
                    return
                await asyncio.sleep(0.01)

        helper = asyncio.ensure_future(answer_challenge())
        try:
            response = await self.bounded(task)
        finally:
            helper.cancel()
        if response.result == "OK":
            proto.state = aioimaplib.AUTH
        return response

    async def _starttls(self, context: ssl.SSLContext) -> None:
        proto = self.proto
        if "STARTTLS" not in {c.upper() for c in proto.capabilities}:
            raise ImapFailure("the server does not offer STARTTLS")
        response = await self.bounded(proto.execute(
            aioimaplib.Command("STARTTLS", proto.new_tag(), loop=proto.loop)))
        if response.result != "OK":
            raise ImapFailure(f"STARTTLS refused: {is_auth_failure(response.lines)}")
        loop = asyncio.get_running_loop()
        transport = await self.bounded(loop.start_tls(
            proto.transport, proto, context, server_hostname=self.account.host))
        proto.transport = transport
        await self.bounded(proto.capability())  # capabilities may change after TLS

    def has(self, capability: str) -> bool:
        return capability.upper() in self.capabilities

    async def select(self, folder: str) -> FolderState:
        response = await self.bounded(self.proto.select(_quoted(folder)))
        if response.result != "OK":
            raise ImapFailure(f"SELECT {folder}: {is_auth_failure(response.lines)}")
        self.selected = parse_select(response.lines)
        self.selected_at = time.monotonic()
        return self.selected

    async def _search(self, *criteria: str) -> list[int]:
        response = await self.bounded(self.proto.search(*criteria, charset=None, by_uid=True))
        if response.result != "OK":
            raise ImapFailure(f"UID SEARCH: {is_auth_failure(response.lines)}")
        return parse_search(response.lines)

    async def uids_from(self, first: int) -> list[int]:
        """UIDs from ``first`` on (``n:*`` also matches the last message when none is new)."""
        return [uid for uid in await self._search("UID", f"{first}:*") if uid >= first]

    async def uids_since(self, since: datetime) -> list[int]:
        return await self._search("SINCE", imap_date(since))

    async def fetch(self, uids: list[int]) -> list[Any]:
        if not uids:
            return []
        response = await self.bounded(self.proto.fetch(
            ",".join(map(str, uids)), "(UID BODY.PEEK[])", by_uid=True, timeout=self.timeout))
        if response.result != "OK":
            raise ImapFailure(f"UID FETCH: {is_auth_failure(response.lines)}")
        return parse_fetch(response.lines)

    async def add_flags(self, uid: int, flags: list[str]) -> None:
        response = await self.bounded(self.proto.store(
            str(uid), "+FLAGS.SILENT", "(" + " ".join(flags) + ")", by_uid=True))
        if response.result != "OK":
            raise ImapFailure(f"UID STORE: {is_auth_failure(response.lines)}")

    async def move(self, uid: int, folder: str) -> None:
        if self.has("MOVE"):
            response = await self.bounded(self.proto.move(str(uid), _quoted(folder),
                                                          by_uid=True))
            if response.result != "OK":
                raise ImapFailure(f"UID MOVE: {is_auth_failure(response.lines)}")
            return
        response = await self.bounded(self.proto.copy(str(uid), _quoted(folder), by_uid=True))
        if response.result != "OK":
            raise ImapFailure(f"UID COPY: {is_auth_failure(response.lines)}")
        await self.add_flags(uid, ["\\Deleted"])
        if self.has("UIDPLUS"):
            await self.bounded(self.proto.expunge(str(uid), by_uid=True))

    async def idle(self, renew: float, watchdog: float) -> str:
        """IDLE until the server says something ('push'), ``watchdog`` seconds of silence
        ('probe') or ``renew`` seconds in all ('renew'); then DONE, whose tagged answer must
        come within the command timeout."""
        proto = self.proto
        while not proto.idle_queue.empty():
            proto.idle_queue.get_nowait()
        command = asyncio.ensure_future(proto.idle())
        ack = asyncio.ensure_future(proto.wait_for_idle_response())
        try:
            await self.bounded(asyncio.wait({command, ack},
                                            return_when=asyncio.FIRST_COMPLETED))
        finally:
            ack.cancel()
        if not proto.has_pending_idle_command():
            await cancel_and_wait(command)
            raise ImapFailure("the server refused IDLE")
        started = time.monotonic()
        reason = "renew"
        while True:
            left = renew - (time.monotonic() - started)
            if left <= 0:
                break
            try:
                lines = await self.bounded(proto.idle_queue.get(), timeout=min(watchdog, left))
            except TimeoutError:
                reason = "probe" if watchdog < left else "renew"
                break
            if any(not bytes(line).upper().startswith(b"OK") for line in lines
                   if isinstance(line, bytes | bytearray)):
                reason = "push"
                break
        proto.idle_done()
        response = await self.bounded(command)
        if response.result != "OK":
            raise ImapFailure(f"IDLE ended with {response.result}")
        return reason

    async def close(self) -> None:
        if self.client is None:
            return
        try:
            if not self.lost.is_set() and self.proto.state in (aioimaplib.AUTH,
                                                               aioimaplib.SELECTED):
                # a polite LOGOUT, not waited for long; a cancellation of the caller (the
                # service stopping) goes on: suppressing BaseException here once swallowed it
                # and left the folder's worker looping after stop()
                with contextlib.suppress(Exception):
                    await self.bounded(self.proto.logout(), timeout=2)
        finally:
            transport = self.proto.transport
            if transport is not None:
                transport.close()
            for task in list(self.proto.tasks):
                task.cancel()
