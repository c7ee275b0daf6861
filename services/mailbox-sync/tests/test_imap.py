"""mailbox-sync against a real Dovecot: IDLE and polling, reconnects, restarts, a changed
UIDVALIDITY, flag and move after ingest, the first-sync horizon, a refused login."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trustme
from mailbox_sync_testkit import USER, Dovecot, Harness, mail

from postroom_testing.procs import until


async def test_appended_mail_reaches_mail_received_by_the_idle_push(
        harness: Harness, dovecot: Dovecot) -> None:
    """The server's push in IDLE brings the mail: no poll, watchdog probe or renewal is due
    for ten minutes. How fast (p50 ~0.5 s, the goal 2 s) is bench_mailbox_sync's to say."""
    await harness.start(imap_watchdog_seconds=600.0, imap_idle_renew_seconds=600.0,
                        email_check_interval=600.0)
    await harness.add_account(dovecot)
    await harness.watching(state="idle")
    raw = mail(subject="Where is order 4711?")
    dovecot.append(raw)
    [event] = await harness.wait_received(1, within=60)
    assert event["source"] == "imap"
    assert event["tenant"] == "acme" and event["mailbox"] == "support"
    assert event["actions"] == ["extract", "classify", "reply"]
    assert event["recipients"] == [USER]
    assert event["envelope_from"] == "ann@customer.example"
    assert event["subject"] == "Where is order 4711?"
    assert harness.runtime is not None and harness.runtime.blobs is not None
    assert await harness.runtime.blobs.get(_ref(event)) == raw  # claim check: the raw MIME
    status = await harness.account()
    [folder] = status["status"]["folders"]
    assert folder["mode"] == "idle" and folder["ingested"] == 1
    assert folder["position"]["uidvalidity"] == dovecot.uidvalidity()
    assert folder["position"]["uidnext"] == 2
    assert folder["position"]["highestmodseq"] is not None  # Dovecot offers CONDSTORE
    async with harness.http as client:
        metrics = (await client.get("/metrics")).text
    assert 'postroom_mailbox_sync_mails_total{result="ingested",source="imap"} 1.0' in metrics
    assert 'postroom_mailbox_sync_imap_idle_cycles_total{reason="push"} 1.0' in metrics


async def test_polling_where_idle_is_off(harness: Harness, dovecot: Dovecot) -> None:
    await harness.start(imap_idle=False, email_check_interval=0.3)
    await harness.add_account(dovecot)
    await harness.watching(state="polling")
    dovecot.append(mail(subject="one"))
    dovecot.append(mail(subject="two"))
    events = await harness.wait_received(2)
    assert [e["subject"] for e in events] == ["one", "two"]
    assert (await harness.account())["status"]["folders"][0]["mode"] == "poll"


def _ref(event: dict) -> object:
    from postroom_contracts import BlobRef

    return BlobRef.model_validate(event["raw"])


async def _synced(harness: Harness, ingested: int, reconnects: int = 0,
                  state: str = "idle") -> dict:
    async def done() -> dict | None:
        folder = (await harness.account())["status"]["folders"][0]
        return folder if (folder["ingested"] + folder["duplicates"] >= ingested
                          and folder["reconnects"] >= reconnects
                          and folder["state"] == state) else None

    return await until(done, 60, what=f"{ingested} mails read after {reconnects} reconnects")


async def test_kicked_connection_and_restarted_dovecot_lose_nothing_and_repeat_nothing(
        harness: Harness, dovecot: Dovecot) -> None:
    await harness.start()
    await harness.add_account(dovecot)
    await harness.watching()
    dovecot.append(mail(subject="before kick"))
    await harness.wait_received(1)

    dovecot.kick()  # the server closes the connection; mail arrives while we are away
    dovecot.append(mail(subject="during kick"))
    await harness.wait_received(2)
    await _synced(harness, 2, reconnects=1)

    await asyncio.to_thread(dovecot.stop)
    await until(lambda: _state(harness, "error"), 30, what="the lost server noticed")
    dovecot.start()
    dovecot.append(mail(subject="after restart"))
    events = await harness.wait_received(3)
    await _synced(harness, 3, reconnects=2)
    assert [e["subject"] for e in await harness.received()] == [
        "before kick", "during kick", "after restart"]
    assert len({e["mail_key"] for e in events}) == 3


async def _state(harness: Harness, state: str) -> bool:
    folders = (await harness.account())["status"]["folders"]
    return bool(folders) and folders[0]["state"] == state


@pytest.mark.parametrize("mode", ["idle", "poll"])
async def test_changed_uidvalidity_reindexes_without_publishing_old_mail_twice(
        harness: Harness, dovecot: Dovecot, mode: str) -> None:
    """The folder is deleted and created again while the service sits in it. Dovecot often
    keeps that session's view of the old folder (STATUS answers the old UIDVALIDITY and
    nothing is pushed); the SELECT after each quiet wait shows the new folder. No fresh
    connection helps here: IMAP_REFRESH_SECONDS stays at its 30 minutes."""
    dovecot.create("Support")
    await harness.start(imap_first_sync_days=30, imap_idle=mode == "idle")
    await harness.add_account(dovecot, folders=["Support"])
    watching = "idle" if mode == "idle" else "polling"
    await harness.watching(state=watching)
    old = [mail(subject=f"old {i}") for i in range(3)]
    for raw in old:
        dovecot.append(raw, "Support")
    await harness.wait_received(3)
    validity = dovecot.uidvalidity("Support")

    dovecot.delete("Support")  # the mailbox is rebuilt: new UIDVALIDITY, the same mails
    dovecot.create("Support")
    for raw in old:
        dovecot.append(raw, "Support")
    dovecot.append(mail(subject="new after rebuild"), "Support")
    assert dovecot.uidvalidity("Support") != validity

    await harness.wait_received(4)
    folder = await _synced(harness, 3 + 4, state=watching)
    assert [e["subject"] for e in await harness.received()] == [
        "old 0", "old 1", "old 2", "new after rebuild"]
    assert folder["duplicates"] == 3
    assert folder["position"]["uidvalidity"] == dovecot.uidvalidity("Support")


async def test_flag_and_move_after_ingest(harness: Harness, dovecot: Dovecot) -> None:
    dovecot.create("Processed")
    await harness.start()
    await harness.add_account(dovecot, mark_seen=True, flag="$Postroom", move_to="Processed")
    await harness.watching()
    dovecot.append(mail(subject="move me"))
    await harness.wait_received(1)
    moved = await until(lambda: dovecot.messages("Processed"), 60, what="the mail moved")
    [(_, flags)] = moved
    assert b"\\Seen" in flags and b"$Postroom" in flags
    assert dovecot.messages("INBOX") == []


async def test_first_sync_horizon(harness: Harness, dovecot: Dovecot) -> None:
    now = datetime.now(UTC)
    dovecot.append(mail(subject="ancient"), when=now - timedelta(days=40))
    dovecot.append(mail(subject="recent"), when=now - timedelta(days=2))
    await harness.start()
    await harness.add_account(dovecot, since=(now - timedelta(days=10)).date().isoformat())
    await harness.watching()
    await harness.wait_received(1)
    dovecot.append(mail(subject="new"))
    await harness.wait_received(2)
    await _synced(harness, 2)
    assert [e["subject"] for e in await harness.received()] == ["recent", "new"]


async def test_wrong_password_is_a_clear_status_error(harness: Harness, dovecot: Dovecot
                                                      ) -> None:
    await harness.start()
    await harness.add_account(dovecot, password="wrong")

    async def refused() -> dict | None:
        status = (await harness.account())["status"]
        return status if status["state"] == "error" and status["last_error"] else None

    status = await until(refused, 60, what="the login refused")
    assert "authentication failed" in status["last_error"].lower()
    async with harness.http as client:
        ready = (await client.get("/health/ready")).json()
    assert ready["details"]["accounts"]["support"]["state"] == "error"
    assert "password" not in str(ready) or "wrong" not in str(ready)


async def test_hung_idle_is_noticed_by_the_watchdog_and_nothing_is_lost(
        harness: Harness, dovecot: Dovecot) -> None:
    await harness.start(imap_watchdog_seconds=1.0, imap_timeout_seconds=1.5)
    await harness.add_account(dovecot)
    await harness.watching()
    frozen = dovecot.imap_processes()
    assert frozen, "no imap process serves the account"
    for pid in frozen:  # the server stops answering, the TCP connection stays open
        os.kill(pid, signal.SIGSTOP)
    try:
        # noticed by the watchdog's probe (DONE) going unanswered, not by anything the
        # server said; how soon is watchdog + command timeout, 2.5 s here
        await until(lambda: _state(harness, "error"), 30, what="the hung connection noticed")
        status = (await harness.account())["status"]["folders"][0]
        assert status["last_error"] == "TimeoutError: no answer within 1.5s", status
        dovecot.append(mail(subject="while hung"))
        [event] = await harness.wait_received(1)
        assert event["subject"] == "while hung"
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                os.kill(pid, signal.SIGCONT)


@pytest.fixture
def private_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_dovecot(private_ca: trustme.CA) -> Iterator[Dovecot]:
    cert = private_ca.issue_cert("127.0.0.1", "localhost")
    server = Dovecot(Dovecot.make_root(), tls=(
        b"".join(blob.bytes() for blob in cert.cert_chain_pems), cert.private_key_pem.bytes()))
    try:
        yield server.start()
    finally:
        server.cleanup()


@pytest.mark.parametrize("security", ["starttls", "ssl"])
async def test_starttls_and_implicit_tls(harness: Harness, tls_dovecot: Dovecot,
                                         private_ca: trustme.CA, tmp_path, security: str
                                         ) -> None:
    """The server's certificate is checked (against IMAP_CA_FILE: its CA is private)."""
    ca_file = tmp_path / "imap-ca.pem"
    private_ca.cert_pem.write_to_path(str(ca_file))
    await harness.start(imap_ca_file=ca_file)
    port = tls_dovecot.tls_port if security == "ssl" else tls_dovecot.port
    await harness.add_account(tls_dovecot, security=security, port=port)
    await harness.watching()
    tls_dovecot.append(mail(subject=f"over {security}"))
    [event] = await harness.wait_received(1)
    assert event["subject"] == f"over {security}" and event["tls"] is True
    assert "TLS" in tls_dovecot.log() or "secured" in tls_dovecot.log()


@pytest.mark.parametrize("security", ["starttls", "ssl"])
async def test_a_certificate_no_trusted_ca_signed_is_a_clear_status_error(
        harness: Harness, tls_dovecot: Dovecot, security: str) -> None:
    await harness.start()  # no IMAP_CA_FILE: the private CA is unknown
    port = tls_dovecot.tls_port if security == "ssl" else tls_dovecot.port
    await harness.add_account(tls_dovecot, security=security, port=port)

    async def refused() -> dict | None:
        status = (await harness.account())["status"]
        return status if status["state"] == "error" and status["last_error"] else None

    status = await until(refused, 30, what="the certificate refused")
    assert "CERTIFICATE_VERIFY_FAILED" in status["last_error"], status
    assert not (await harness.account())["status"]["folders"][0]["ingested"]


class Introspection(BaseHTTPRequestHandler):
    """RFC 7662 token introspection as an OAuth2 server answers Dovecot's oauth2 passdb."""

    good_token = "ya29.good-access-token"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        active = form.get("token") == [self.good_token]
        body = json.dumps({"active": active, **({"username": USER} if active else {})})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def oauth_dovecot() -> Iterator[Dovecot]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Introspection)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/introspect"
    dovecot = Dovecot(Dovecot.make_root(), oauth2_introspection_url=url)
    try:
        yield dovecot.start()
    finally:
        dovecot.cleanup()
        server.shutdown()


async def test_xoauth2_login(harness: Harness, oauth_dovecot: Dovecot) -> None:
    await harness.start()
    body = {"password": None, "oauth_token": Introspection.good_token}
    await harness.add_account(oauth_dovecot, **body)
    await harness.watching()
    oauth_dovecot.append(mail(subject="via xoauth2"))
    [event] = await harness.wait_received(1)
    assert event["subject"] == "via xoauth2"

    await harness.add_account(oauth_dovecot, id="expired", password=None,
                              oauth_token="ya29.expired-token")

    async def refused() -> dict | None:
        status = (await harness.account("expired"))["status"]
        return status if status["state"] == "error" and status["last_error"] else None

    status = await until(refused, 60, what="the expired token refused")
    assert "authentication failed" in status["last_error"].lower()


async def test_service_restart_resumes_from_the_stored_position(harness: Harness,
                                                               dovecot: Dovecot) -> None:
    await harness.start()
    await harness.add_account(dovecot)
    await harness.watching()
    dovecot.append(mail(subject="first"))
    dovecot.append(mail(subject="second"))
    await harness.wait_received(2)
    await harness.stop()
    dovecot.append(mail(subject="while the service was down"))
    await harness.start()  # the same store: the account, its sealed password, its position
    await harness.watching()
    await harness.wait_received(3)
    await _synced(harness, 1)
    assert [e["subject"] for e in await harness.received()] == [
        "first", "second", "while the service was down"]


async def test_a_mailbox_the_tenant_lacks_is_a_status_error_and_reads_nothing(
        harness: Harness, dovecot: Dovecot) -> None:
    dovecot.append(mail(subject="waits for its route"))
    await harness.start(imap_first_sync_days=1)
    await harness.add_account(dovecot, mailbox="sales")  # acme has no mailbox 'sales'

    async def refused() -> dict | None:
        status = (await harness.account())["status"]
        return status if status["state"] == "error" and status["last_error"] else None

    status = await until(refused, 60, what="the unroutable account reported")
    assert "no mailbox 'sales'" in status["last_error"]
    assert await harness.received() == []


async def test_a_burst_in_two_watched_folders_arrives_once_each(harness: Harness,
                                                               dovecot: Dovecot) -> None:
    dovecot.create("Support")
    await harness.start(imap_fetch_batch=7)  # several UID FETCH batches per sync
    await harness.add_account(dovecot, folders=["INBOX", "Support"])
    await harness.watching()
    sent = []
    with dovecot.imap() as client:  # one connection: as fast as the server takes them
        for i in range(30):
            folder = "INBOX" if i % 2 == 0 else "Support"
            subject = f"burst {i:02d}"
            client.append(folder, None, None, mail(subject=subject))
            sent.append(subject)
    events = await harness.wait_received(30, within=60)
    assert sorted(e["subject"] for e in events) == sent
    assert len({e["mail_key"] for e in events}) == 30

    async def both_synced() -> bool:
        folders = (await harness.account())["status"]["folders"]
        return sum(f["ingested"] for f in folders) == 30 and all(
            f["state"] == "idle" for f in folders)

    await until(both_synced, 60, what="both folders synced")
    assert len(await harness.received()) == 30
