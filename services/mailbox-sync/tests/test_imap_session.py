"""ImapSession against a real Dovecot whose imap process stops answering: closing the session
(what a folder's worker does on every failure and at stop) must let the caller's cancellation
through, or the worker outlives ``stop()`` and loops forever."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import pytest
from mailbox_sync_testkit import PASSWORD, USER, Dovecot

from postroom_mailbox_sync.handlers import Account
from postroom_mailbox_sync.imap import ImapSession
from postroom_testing.procs import until


def _account(dovecot: Dovecot) -> Account:
    return Account(
        id="support", kind="imap", origin="api", tenant="acme", mailbox="support",
        address=USER, host="127.0.0.1", port=dovecot.port, security="none", tls_verify=True,
        username=USER, auth="password", secret=PASSWORD, folders=("INBOX",), mode="auto",
        mark_seen=False, flag=None, move_to=None, since=None, enabled=True)


async def test_a_cancelled_close_is_not_swallowed_while_logout_hangs(dovecot: Dovecot) -> None:
    session = ImapSession(_account(dovecot), timeout=30.0)
    await session.open()
    await session.select("INBOX")
    frozen = dovecot.imap_processes()
    assert frozen, "no imap process serves the session"
    for pid in frozen:  # LOGOUT will go unanswered; the TCP connection stays open
        os.kill(pid, signal.SIGSTOP)
    try:
        closing = asyncio.create_task(session.close())

        def logout_pending() -> bool:
            command = session.proto.pending_sync_command
            return command is not None and command.name == "LOGOUT"

        await until(logout_pending, 30, what="LOGOUT sent and waiting for its answer")
        assert not closing.done()
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        assert session.proto.transport is None or session.proto.transport.is_closing()
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                os.kill(pid, signal.SIGCONT)
