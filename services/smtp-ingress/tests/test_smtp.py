"""Real SMTP sessions (smtplib, raw sockets) against the service running in-process with a real
nats-server: reply codes, events in the stream, rows in the store."""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import logging
import re
import smtplib
import socket
import string
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from smtp_ingress_testkit import DOMAIN, Ingress, make_mail, wait_for

from postroom_contracts import BlobRef, MailReceived, Tenant, derive_event_id, mail_key
from postroom_runtime.tenants import put_tenant
from postroom_smtp_ingress import handlers as h
from postroom_smtp_ingress.store import ReceivedMails
from postroom_testing.nats import NatsServer

ACME = f"orders+acme@{DOMAIN}"
SENDER = "buyer@supplier.example"


def smtp(ingress: Ingress) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", ingress.port, timeout=30)
    client.ehlo("client.example")
    return client


def transaction(ingress: Ingress, recipients: list[str], raw: bytes,
                sender: str = SENDER) -> tuple[list[tuple[int, bytes]], tuple[int, bytes]]:
    """MAIL, RCPT..., DATA with low-level commands: every reply, nothing raised."""
    with smtp(ingress) as client:
        assert client.mail(sender)[0] == 250
        rcpt = [client.rcpt(r) for r in recipients]
        if not any(code == 250 for code, _ in rcpt):
            return rcpt, (0, b"")
        return rcpt, client.data(raw)


async def send(ingress: Ingress, recipients: list[str], raw: bytes,
               sender: str = SENDER) -> tuple[int, bytes]:
    rcpt, data = await asyncio.to_thread(transaction, ingress, recipients, raw, sender)
    assert all(code == 250 for code, _ in rcpt), rcpt
    return data


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def stored(ingress: Ingress, event: MailReceived) -> tuple[bytes, bytes]:
    """The stored raw mail of an event, split into our Received header (the first header,
    folded lines included) and the rest: the message exactly as the client sent it."""
    assert ingress.runtime.blobs is not None
    blob = await ingress.runtime.blobs.get(event.raw)
    assert blob.startswith(b"Received: from ")
    end = re.search(rb"\r\n(?![ \t])", blob)
    assert end is not None
    return blob[:end.end()], blob[end.end():]


RECEIVED = re.compile(
    r"Received: from (?P<helo>\S+) \(unknown \[(?P<ip>[^\]]+)\]\)\r\n"
    r"(?:\t\(using (?P<tls>\S+) with cipher (?P<cipher>\S+) \((?P<bits>\d+)/(?P=bits) bits\)\)"
    r"\r\n)?"
    r"\tby (?P<by>\S+) \(Postroom\) with (?P<protocol>[A-Z0-9]+) id (?P<id>[0-9A-F]{12})"
    r"(?:\r\n\tfor <(?P<rcpt>[^>]+)>)?; (?P<date>[^\r\n]+)\r\n"
)


def parse_received(header: bytes) -> dict[str, str]:
    match = RECEIVED.fullmatch(header.decode())
    assert match is not None, header
    return match.groupdict()


# --- 250 and 250 duplicate ------------------------------------------------------------------


async def test_accepted_mail_is_stored_published_and_recorded(ingress: Ingress) -> None:
    raw = make_mail()

    def run() -> tuple[tuple[int, bytes], int]:
        with smtp(ingress) as client:
            port = client.sock.getsockname()[1]
            client.mail(SENDER)
            client.rcpt(ACME)
            return client.data(raw), port

    before = datetime.now(UTC).replace(microsecond=0)
    reply, client_port = await asyncio.to_thread(run)
    assert reply == (250, b"2.0.0 Message accepted")

    [(event, headers)] = await ingress.events()
    key = mail_key("acme", "<order-1@supplier.example>", sha256(raw))
    assert event.tenant == "acme" and event.mail_key == key
    assert event.event_id == derive_event_id(key, "mail.received")
    assert headers["Nats-Msg-Id"] == event.event_id
    assert (event.mailbox, event.actions, event.recipients) == ("orders", ["extract"], [ACME])
    assert event.envelope_from == SENDER
    assert event.subject == "Purchase order 4711"
    assert event.message_id == "<order-1@supplier.example>" and not event.message_id_synthetic
    assert not event.message_id_reused
    assert (event.tls, event.authenticated) == (False, False)
    # the session, as the subscriber (e.g. SPF) needs it
    assert event.smtp is not None
    assert event.smtp.model_dump() == {
        "client_ip": "127.0.0.1", "client_port": client_port, "helo": "client.example",
        "esmtp": True, "tls_version": None, "tls_cipher": None, "tls_bits": None,
        "auth_user": None, "auth_mechanism": None,
    }
    # claim check: the blob holds our Received header, then exactly the bytes received
    received, content = await stored(ingress, event)
    assert content == raw
    assert event.size == event.raw.size == len(received) + len(raw)
    assert event.raw.sha256 == sha256(received + raw)
    assert event.raw.bucket == "postroom-blobs-small"  # one round trip, not three
    trace = parse_received(received)
    assert {k: trace[k] for k in ("helo", "ip", "tls", "by", "protocol", "rcpt")} == {
        "helo": "client.example", "ip": "127.0.0.1", "tls": None, "by": "postroom.local",
        "protocol": "ESMTP", "rcpt": ACME}
    stamped = email.utils.parsedate_to_datetime(trace["date"])
    assert before <= stamped <= datetime.now(UTC)

    [row] = await ingress.rows()
    assert (row["tenant"], row["message_id"], row["mail_key"], row["event_id"]) == (
        "acme", "<order-1@supplier.example>", key, event.event_id)
    assert (row["raw_sha256"], row["size"], row["state"]) == (event.raw.sha256, event.size,
                                                              "RECEIVED")
    assert row["content_sha256"] == sha256(raw)
    assert ingress.metric("postroom_smtp_messages_total", result="accepted") == 1


async def test_mail_above_the_small_blob_threshold_goes_to_the_object_store(
    start_ingress: Any,
) -> None:
    ingress = await start_ingress(blob_small_max_bytes=1024)
    small = make_mail(message_id="<s@x>")
    large = make_mail(message_id="<l@x>", body="line\r\n" * 400)
    assert (await send(ingress, [ACME], small))[0] == 250
    assert (await send(ingress, [ACME], large))[0] == 250
    events = {e.message_id: e for e, _ in await ingress.events()}
    assert events["<s@x>"].raw.bucket == "postroom-blobs-small"
    assert events["<l@x>"].raw.bucket == "postroom-blobs"
    assert (await stored(ingress, events["<l@x>"]))[1] == large


async def test_same_mail_again_is_a_duplicate_without_new_event(ingress: Ingress) -> None:
    raw = make_mail()
    assert (await send(ingress, [ACME], raw))[0] == 250
    # the same mail resent, even to another mailbox of the tenant: a duplicate
    assert await send(ingress, [f"support+acme@{DOMAIN}"], raw) == (
        250, b"2.0.0 Message accepted (duplicate)")
    assert len(await ingress.events()) == 1
    assert len(await ingress.rows()) == 1
    assert ingress.metric("postroom_smtp_messages_total", result="duplicate") == 1


async def test_a_reused_message_id_with_other_content_is_a_new_mail(ingress: Ingress) -> None:
    """Some senders (ERPs, scanners) put one Message-ID on every mail: a mail with a Message-ID
    seen before but other content is accepted as the new mail it is, and flagged."""
    from postroom_runtime.logs import _ContextFilter

    first = make_mail(subject="Purchase order 4711")
    second = make_mail(subject="Purchase order 4712", body="Another order.")
    assert (await send(ingress, [ACME], first))[0] == 250

    records: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Capture()
    handler.addFilter(_ContextFilter("smtp-ingress"))
    logger = logging.getLogger("postroom_smtp_ingress")
    saved_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        assert await send(ingress, [ACME], second) == (250, b"2.0.0 Message accepted")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved_level)
    # and each of the two again: a duplicate of its own
    assert await send(ingress, [ACME], second) == (250, b"2.0.0 Message accepted (duplicate)")
    assert await send(ingress, [ACME], first) == (250, b"2.0.0 Message accepted (duplicate)")

    events = [e for e, _ in await ingress.events()]
    assert [e.subject for e in events] == ["Purchase order 4711", "Purchase order 4712"]
    assert [e.message_id for e in events] == ["<order-1@supplier.example>"] * 2
    assert [e.message_id_reused for e in events] == [False, True]
    assert events[0].mail_key != events[1].mail_key
    assert events[1].mail_key == mail_key("acme", "<order-1@supplier.example>", sha256(second))
    assert (await stored(ingress, events[1]))[1] == second
    rows = await ingress.rows()
    assert [r["mail_key"] for r in rows] == [e.mail_key for e in events]
    assert ingress.metric("postroom_smtp_message_id_reused_total") == 1
    assert ingress.metric("postroom_smtp_messages_total", result="accepted") == 2
    assert ingress.metric("postroom_smtp_messages_total", result="duplicate") == 2
    [reused] = [r for r in records if r.getMessage().startswith("Message-ID reused")]
    assert reused.reused_mail_keys == [events[1].mail_key]  # type: ignore[attr-defined]
    assert reused.mail_key == events[1].mail_key  # type: ignore[attr-defined]


async def test_dedup_is_per_tenant(ingress: Ingress) -> None:
    assert (await send(ingress, [ACME], make_mail()))[0] == 250
    assert await send(ingress, [f"info+globex@{DOMAIN}"], make_mail()) == (
        250, b"2.0.0 Message accepted")
    assert sorted(e.tenant for e, _ in await ingress.events()) == ["acme", "globex"]


async def test_missing_message_id_gets_synthetic_id_and_dedups(ingress: Ingress) -> None:
    raw = make_mail(message_id=None)
    assert (await send(ingress, [ACME], raw))[0] == 250
    assert await send(ingress, [ACME], raw) == (250, b"2.0.0 Message accepted (duplicate)")
    [(event, _)] = await ingress.events()
    assert event.message_id_synthetic
    assert event.message_id == h.read_headers(raw).message_id
    assert event.message_id.startswith("<synthetic-")


async def test_mails_without_message_id_that_differ_only_in_the_body_are_two_mails(
    ingress: Ingress,
) -> None:
    first = make_mail(message_id=None, body="Order 1: 10 pallets.")
    second = make_mail(message_id=None, body="Order 2: 12 pallets.")
    assert await send(ingress, [ACME], first) == (250, b"2.0.0 Message accepted")
    assert await send(ingress, [ACME], second) == (250, b"2.0.0 Message accepted")
    events = [e for e, _ in await ingress.events()]
    assert len({e.message_id for e in events}) == 2
    assert not any(e.message_id_reused for e in events)
    assert [(await stored(ingress, e))[1] for e in events] == [first, second]


async def test_recipients_of_two_tenants_give_two_events(ingress: Ingress) -> None:
    raw = make_mail()
    recipients = [ACME, f"x+globex@{DOMAIN}", f"support+acme@{DOMAIN}"]
    assert await send(ingress, recipients, raw) == (250, b"2.0.0 Message accepted")
    events = {e.tenant: e for e, _ in await ingress.events()}
    assert set(events) == {"acme", "globex"}
    assert events["acme"].recipients == [ACME, f"support+acme@{DOMAIN}"]
    assert events["acme"].actions == ["extract", "classify", "reply"]
    assert events["acme"].mailbox == "orders"
    assert events["globex"].recipients == [f"x+globex@{DOMAIN}"]
    assert events["globex"].actions == ["classify"]
    assert events["acme"].mail_key == mail_key("acme", "<order-1@supplier.example>", sha256(raw))
    assert events["globex"].mail_key == mail_key("globex", "<order-1@supplier.example>",
                                                 sha256(raw))
    assert events["acme"].raw == events["globex"].raw  # one blob
    # several recipients: the Received header names none of them (as Postfix)
    assert parse_received((await stored(ingress, events["acme"]))[0])["rcpt"] is None
    assert sorted(r["tenant"] for r in await ingress.rows()) == ["acme", "globex"]

    # again to both, plus a copy for a tenant that has not seen it: only that one is new
    await put_tenant(ingress.runtime.js, Tenant(slug="initech", domains=[DOMAIN]))
    await wait_for(lambda: ingress.runtime.smtp.tenant("initech") is not None)
    assert await send(ingress, [*recipients, f"any+initech@{DOMAIN}"], raw) == (
        250, b"2.0.0 Message accepted")
    assert sorted(e.tenant for e, _ in await ingress.events()) == ["acme", "globex", "initech"]
    assert await send(ingress, [*recipients, f"any+initech@{DOMAIN}"], raw) == (
        250, b"2.0.0 Message accepted (duplicate)")
    assert len(await ingress.events()) == 3


async def test_concurrent_copies_of_one_mail_make_one_event(ingress: Ingress) -> None:
    raw = make_mail(message_id="<burst@supplier.example>")
    replies = await asyncio.gather(*(send(ingress, [ACME], raw) for _ in range(8)))
    assert {code for code, _ in replies} == {250}
    assert b"2.0.0 Message accepted" in {text for _, text in replies}
    assert len(await ingress.events()) == 1
    assert len(await ingress.rows()) == 1


# --- RCPT refusals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recipient", "reply"),
    [
        ("orders+acme@elsewhere.example", (550, b"5.7.1 Relaying denied")),
        ("someone@gmail.com", (550, b"5.7.1 Relaying denied")),
        (f"orders@{DOMAIN}", (550, b"5.1.1 Unknown recipient")),
        (f"orders+nobody@{DOMAIN}", (550, b"5.1.1 Unknown recipient")),
        (f"orders+gone@{DOMAIN}", (550, b"5.1.1 Unknown recipient")),
        (f"invoices+acme@{DOMAIN}", (550, b"5.1.1 Unknown recipient")),
        ("orders+acme@globex.example", (550, b"5.1.1 Unknown recipient")),
        ("ORDERS+ACME@INTAKE.EXAMPLE.COM", (250, b"2.1.5 Recipient OK")),
    ],
)
async def test_rcpt_replies(ingress: Ingress, recipient: str, reply: tuple[int, bytes]) -> None:
    rcpt, _ = await asyncio.to_thread(transaction, ingress, [recipient], make_mail())
    assert rcpt == [reply]


async def test_refused_recipients_get_no_copy(ingress: Ingress) -> None:
    rcpt, data = await asyncio.to_thread(
        transaction, ingress, [ACME, "x@elsewhere.example", f"orders+nobody@{DOMAIN}"],
        make_mail(),
    )
    assert [code for code, _ in rcpt] == [250, 550, 550]
    assert data == (250, b"2.0.0 Message accepted")
    [(event, _)] = await ingress.events()
    assert event.recipients == [ACME]


async def test_too_many_recipients(start_ingress: Any) -> None:
    ingress = await start_ingress(smtp_max_recipients=2)
    recipients = [ACME, f"support+acme@{DOMAIN}", f"x+globex@{DOMAIN}"]
    rcpt, data = await asyncio.to_thread(transaction, ingress, recipients, make_mail())
    assert rcpt[:2] == [(250, b"2.1.5 Recipient OK")] * 2
    assert rcpt[2] == (452, b"4.5.3 Too many recipients")
    assert data[0] == 250
    [(event, _)] = await ingress.events()
    assert event.recipients == recipients[:2]


async def test_tenant_added_at_runtime_is_routed(ingress: Ingress) -> None:
    address = f"orders+newco@{DOMAIN}"
    rcpt, _ = await asyncio.to_thread(transaction, ingress, [address], make_mail())
    assert rcpt == [(550, b"5.1.1 Unknown recipient")]
    await put_tenant(ingress.runtime.js, Tenant(slug="newco", domains=[DOMAIN]))
    await wait_for(lambda: ingress.runtime.smtp.tenant("newco") is not None)
    assert (await send(ingress, [address], make_mail()))[0] == 250


# --- 552 --------------------------------------------------------------------------------------


async def test_size_is_advertised_and_enforced(start_ingress: Any) -> None:
    ingress = await start_ingress(smtp_max_message_size=2048)

    def run() -> tuple[Any, ...]:
        with smtp(ingress) as client:
            advertised = client.esmtp_features.get("size")
            announced = client.mail(SENDER, ["SIZE=5000"])
            client.rset()
            client.mail(SENDER)
            client.rcpt(ACME)
            too_big = client.data(make_mail(body="x" * 70 + ("\r\n" + "y" * 70) * 40))
            client.rset()
            client.mail(SENDER)
            client.rcpt(ACME)
            small = client.data(make_mail())
            return advertised, announced, too_big, small

    advertised, announced, too_big, small = await asyncio.to_thread(run)
    assert advertised == "2048"
    assert announced[0] == 552
    assert too_big == (552, b"Error: Too much mail data")
    assert small[0] == 250
    assert len(await ingress.events()) == 1
    assert ingress.metric("postroom_smtp_messages_total", result="too_big") == 2


# --- 451 and the retry --------------------------------------------------------------------------


async def test_nats_down_gives_451_and_the_retry_makes_exactly_one_event(
    ingress: Ingress, nats_server: NatsServer
) -> None:
    raw = make_mail(message_id="<retry@supplier.example>")
    broker = ingress.runtime.broker
    await nats_server.astop()
    await wait_for(lambda: not broker.connection.is_connected)
    assert await send(ingress, [ACME], raw) == (
        451, b"4.3.0 Temporary server error, try again later")
    assert await ingress.rows() == []
    assert ingress.metric("postroom_smtp_messages_total", result="tempfail") == 1

    await nats_server.astart()
    await wait_for(lambda: broker.connection.is_connected, within=30)
    assert await send(ingress, [ACME], raw) == (250, b"2.0.0 Message accepted")
    assert await send(ingress, [ACME], raw) == (250, b"2.0.0 Message accepted (duplicate)")
    events = await ingress.events()
    assert [e.message_id for e, _ in events] == ["<retry@supplier.example>"]
    assert len(await ingress.rows()) == 1


async def test_store_failure_after_publish_gives_451_and_retry_does_not_duplicate(
    ingress: Ingress, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = make_mail(message_id="<late-failure@supplier.example>")
    original = ReceivedMails.record
    calls = 0

    async def failing_once(self: ReceivedMails, mails: Any) -> set[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("disk full")
        return await original(self, mails)

    monkeypatch.setattr(ReceivedMails, "record", failing_once)
    assert (await send(ingress, [ACME], raw))[0] == 451
    assert len(await ingress.events()) == 1  # published, but not acknowledged to the sender
    assert await ingress.rows() == []
    # the sender retries: same Nats-Msg-Id, JetStream keeps one event; now the row is committed
    assert await send(ingress, [ACME], raw) == (250, b"2.0.0 Message accepted")
    assert len(await ingress.events()) == 1
    assert len(await ingress.rows()) == 1


async def test_blob_failure_gives_451_and_nothing_is_published(
    ingress: Ingress, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(data: bytes, content_type: str | None = None, **_: Any) -> BlobRef:
        raise ConnectionError("object store unavailable")

    monkeypatch.setattr(ingress.runtime.blobs, "put", broken)
    assert (await send(ingress, [ACME], make_mail()))[0] == 451
    assert await ingress.events() == []
    assert await ingress.rows() == []


# --- line endings and smuggling --------------------------------------------------------------


def raw_session(port: int, payload: bytes, *, wait_for_replies: int) -> list[bytes]:
    """Speak SMTP over a plain socket; return the reply lines received."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = sock.makefile("rb")
        lines = [reader.readline()]  # greeting
        sock.sendall(payload)
        while len([ln for ln in lines if ln[3:4] == b" "]) < wait_for_replies + 1:
            line = reader.readline()
            if not line:
                break
            lines.append(line)
        return lines[1:]


def commands(*lines: str) -> bytes:
    return "".join(f"{line}\r\n" for line in lines).encode()


@pytest.mark.parametrize("terminator", [b"\n.\r\n", b"\r\n.\n", b"\n.\n", b"\r.\r\n"])
async def test_smuggled_message_is_not_split_off(ingress: Ingress, terminator: bytes) -> None:
    smuggled = (
        b"From: a@b.example\r\nSubject: first\r\nMessage-ID: <first@x>\r\n\r\nhello"
        + terminator
        + commands("MAIL FROM:<evil@attacker.example>", f"RCPT TO:<{ACME}>", "DATA")
        + b"From: ceo@supplier.example\r\nSubject: smuggled\r\nMessage-ID: <evil@x>\r\n\r\n"
        + b"pay now\r\n.\r\n"
    )
    payload = (
        commands("EHLO client.example", "MAIL FROM:<a@b.example>", f"RCPT TO:<{ACME}>", "DATA")
        + smuggled
        + commands("NOOP", "QUIT")
    )
    replies = await asyncio.to_thread(raw_session, ingress.port, payload, wait_for_replies=7)
    finals = [ln.rstrip() for ln in replies if ln[3:4] == b" "]
    # EHLO, MAIL, RCPT, DATA 354, then ONE reply for the whole data, then NOOP and QUIT:
    # the "commands" inside the data were never executed
    assert finals[1:4] == [b"250 OK", b"250 2.1.5 Recipient OK",
                           b"354 End data with <CR><LF>.<CR><LF>"]
    assert finals[4] == b"550 5.5.2 Bare CR or LF not allowed in message data, use CRLF"
    assert finals[5:] == [b"250 OK", b"221 Bye"]
    assert await ingress.events() == []
    assert ingress.metric("postroom_smtp_messages_total", result="rejected") == 1


async def test_bare_lf_is_rejected(ingress: Ingress) -> None:
    raw = make_mail().replace(b"Please find", b"Please\nfind")
    assert await send(ingress, [ACME], raw) == (
        550, b"5.5.2 Bare CR or LF not allowed in message data, use CRLF")
    assert await ingress.events() == []


async def test_dot_stuffing_is_undone(ingress: Ingress) -> None:
    raw = make_mail(body="line one\r\n.\r\n..two dots\r\n.leading dot")
    payload = (
        commands("EHLO c", "MAIL FROM:<a@b.example>", f"RCPT TO:<{ACME}>", "DATA")
        + raw.replace(b"\r\n.", b"\r\n..")  # what a client does (RFC 5321 4.5.2)
        + b".\r\n"
        + commands("QUIT")
    )
    replies = await asyncio.to_thread(raw_session, ingress.port, payload, wait_for_replies=6)
    assert b"250 2.0.0 Message accepted\r\n" in replies
    [(event, _)] = await ingress.events()
    assert (await stored(ingress, event))[1] == raw


# --- TLS, AUTH ----------------------------------------------------------------------------------


async def test_starttls_then_auth(start_ingress: Any, server_cert: Any, client_tls: Any) -> None:
    cert, key = server_cert
    ingress = await start_ingress(smtp_tls_cert=cert, smtp_tls_key=key,
                                  smtp_auth_users="alice:s3cret:with-colon,bob:pw")

    def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with smtp(ingress) as client:
            out["plain_features"] = dict(client.esmtp_features)
            out["auth_plain"] = client.docmd("AUTH", "PLAIN AGFsaWNlAHMzY3JldA==")
            out["starttls"] = client.starttls(context=client_tls)
            client.ehlo("client.example")
            out["tls_features"] = dict(client.esmtp_features)
            try:
                client.login("alice", "wrong")
            except smtplib.SMTPAuthenticationError as exc:
                out["bad_login"] = exc.smtp_code
            out["login"] = client.login("alice", "s3cret:with-colon")
            out["tls"] = (client.sock.version(), *client.sock.cipher()[::2])
            client.mail(SENDER)
            client.rcpt(ACME)
            out["data"] = client.data(make_mail())
        return out

    out = await asyncio.to_thread(run)
    assert "starttls" in out["plain_features"] and "auth" not in out["plain_features"]
    assert out["auth_plain"][0] == 538  # 5.7.11 encryption required
    assert out["starttls"][0] == 220
    assert "starttls" not in out["tls_features"]
    assert set(out["tls_features"]["auth"].split()) == {"LOGIN", "PLAIN"}
    assert out["bad_login"] == 535
    assert out["login"][0] == 235
    assert out["data"] == (250, b"2.0.0 Message accepted")
    [(event, _)] = await ingress.events()
    assert (event.tls, event.authenticated) == (True, True)
    # what the client negotiated is what the event and the Received header say
    version, cipher, bits = out["tls"]
    assert event.smtp is not None
    assert (event.smtp.tls_version, event.smtp.tls_cipher, event.smtp.tls_bits) == out["tls"]
    assert (event.smtp.auth_user, event.smtp.auth_mechanism) == ("alice", "PLAIN")
    assert (event.smtp.helo, event.smtp.esmtp) == ("client.example", True)
    trace = parse_received((await stored(ingress, event))[0])
    assert (trace["tls"], trace["cipher"], trace["bits"]) == (version, cipher, str(bits))
    assert trace["protocol"] == "ESMTPSA"  # RFC 3848: ESMTP + STARTTLS + AUTH
    assert "alice" not in (await stored(ingress, event))[0].decode()  # the user is not written


async def test_each_mail_of_a_session_carries_the_facts_at_its_time(
    start_ingress: Any, server_cert: Any, client_tls: Any
) -> None:
    cert, key = server_cert
    ingress = await start_ingress(smtp_tls_cert=cert, smtp_tls_key=key,
                                  smtp_auth_users="alice:pw")

    def run() -> None:
        with smtp(ingress) as client:  # EHLO client.example
            client.sendmail(SENDER, [ACME], make_mail(message_id="<plain@x>"))
            client.starttls(context=client_tls)
            client.ehlo("tls.client.example")
            client.sendmail(SENDER, [ACME], make_mail(message_id="<tls@x>"))
            client.login("alice", "pw")
            client.sendmail(SENDER, [ACME], make_mail(message_id="<auth@x>"))
            client.ehlo("renamed.client.example")
            client.sendmail(SENDER, [ACME], make_mail(message_id="<renamed@x>"))

    await asyncio.to_thread(run)
    events = [e for e, _ in await ingress.events()]
    facts = [(e.smtp.helo, e.smtp.tls_version is not None, e.smtp.auth_user)
             for e in events if e.smtp is not None]
    assert facts == [("client.example", False, None), ("tls.client.example", True, None),
                     ("tls.client.example", True, "alice"),
                     ("renamed.client.example", True, "alice")]
    protocols = [parse_received((await stored(ingress, e))[0])["protocol"] for e in events]
    assert protocols == ["ESMTP", "ESMTPS", "ESMTPSA", "ESMTPSA"]


async def test_require_tls_refuses_mail_before_starttls(
    start_ingress: Any, server_cert: Any, client_tls: Any
) -> None:
    cert, key = server_cert
    ingress = await start_ingress(smtp_tls_cert=cert, smtp_tls_key=key, smtp_require_tls=True)

    def run() -> tuple[Any, Any]:
        with smtp(ingress) as client:
            before = client.mail(SENDER)
            client.starttls(context=client_tls)
            client.ehlo("client.example")
            client.mail(SENDER)
            client.rcpt(ACME)
            return before, client.data(make_mail())

    before, after = await asyncio.to_thread(run)
    assert before == (530, b"5.7.0 Must issue a STARTTLS command first")
    assert after[0] == 250
    [(event, _)] = await ingress.events()
    assert event.tls


async def test_auth_required(start_ingress: Any, server_cert: Any, client_tls: Any) -> None:
    cert, key = server_cert
    ingress = await start_ingress(smtp_tls_cert=cert, smtp_tls_key=key,
                                  smtp_auth_users="alice:pw", smtp_auth_required=True)

    def run() -> tuple[Any, Any]:
        with smtp(ingress) as client:
            client.starttls(context=client_tls)
            client.ehlo("client.example")
            anonymous = client.mail(SENDER)
            client.login("alice", "pw")
            return anonymous, client.mail(SENDER)

    anonymous, authenticated = await asyncio.to_thread(run)
    assert anonymous == (530, b"5.7.0 Authentication required")
    assert authenticated[0] == 250


async def test_no_auth_offered_without_users(
    start_ingress: Any, server_cert: Any, client_tls: Any
) -> None:
    cert, key = server_cert
    ingress = await start_ingress(smtp_tls_cert=cert, smtp_tls_key=key)

    def run() -> tuple[Any, Any]:
        with smtp(ingress) as client:
            client.starttls(context=client_tls)
            client.ehlo("client.example")
            return dict(client.esmtp_features), client.docmd("AUTH", "PLAIN AGEAYg==")

    features, auth = await asyncio.to_thread(run)
    assert "auth" not in features
    assert auth[0] == 504


async def test_implicit_tls_listener(
    start_ingress: Any, server_cert: Any, client_tls: Any
) -> None:
    from postroom_testing.procs import free_port

    cert, key = server_cert
    ingress = await start_ingress(smtp_tls_cert=cert, smtp_tls_key=key,
                                  smtp_tls_port=free_port(), smtp_auth_users="alice:pw")

    def run() -> tuple[Any, ...]:
        with smtplib.SMTP_SSL("127.0.0.1", ingress.tls_port, context=client_tls,
                              timeout=30) as client:
            client.ehlo("client.example")
            features = dict(client.esmtp_features)
            login = client.login("alice", "pw")
            client.mail(SENDER)
            client.rcpt(ACME)
            return features, login, client.data(make_mail())

    features, login, data = await asyncio.to_thread(run)
    assert "starttls" not in features and "auth" in features
    assert login[0] == 235
    assert data == (250, b"2.0.0 Message accepted")
    [(event, _)] = await ingress.events()
    assert (event.tls, event.authenticated) == (True, True)
    assert event.smtp is not None and event.smtp.tls_version in ("TLSv1.2", "TLSv1.3")
    assert event.smtp.tls_cipher and event.smtp.tls_bits
    trace = parse_received((await stored(ingress, event))[0])
    assert (trace["tls"], trace["protocol"]) == (event.smtp.tls_version, "ESMTPSA")


# --- null sender, HELO, the Received header against hostile input ---------------------------


async def test_null_sender_is_accepted_and_recorded_as_an_empty_reverse_path(
    ingress: Ingress,
) -> None:
    bounce = make_mail(message_id="<dsn-1@mx.supplier.example>",
                       subject="Undelivered Mail Returned to Sender")

    def run() -> tuple[dict[str, Any], tuple[int, bytes]]:
        with smtp(ingress) as client:
            refused = client.sendmail("", [ACME], bounce)  # MAIL FROM:<>
            return refused, client.noop()

    refused, noop = await asyncio.to_thread(run)
    assert refused == {} and noop[0] == 250
    # the same over a raw socket, with a parameter after the null path
    dsn = make_mail(message_id="<dsn-2@mx.supplier.example>")
    payload = (commands("EHLO mx.supplier.example", "MAIL FROM:<> BODY=8BITMIME",
                        f"RCPT TO:<{ACME}>", "DATA")
               + dsn + b".\r\n" + commands("QUIT"))
    replies = await asyncio.to_thread(raw_session, ingress.port, payload, wait_for_replies=6)
    finals = [ln.rstrip() for ln in replies if ln[3:4] == b" "]
    assert finals[1:] == [b"250 OK", b"250 2.1.5 Recipient OK",
                          b"354 End data with <CR><LF>.<CR><LF>", b"250 2.0.0 Message accepted",
                          b"221 Bye"]
    events = [e for e, _ in await ingress.events()]
    assert [e.message_id for e in events] == ["<dsn-1@mx.supplier.example>",
                                              "<dsn-2@mx.supplier.example>"]
    assert [e.envelope_from for e in events] == ["", ""]
    assert [(await stored(ingress, e))[1] for e in events] == [bounce, dsn]


async def test_helo_instead_of_ehlo(ingress: Ingress) -> None:
    def run() -> Any:
        with smtplib.SMTP("127.0.0.1", ingress.port, timeout=30) as client:
            client.helo("old.client.example")
            return client.sendmail(SENDER, [ACME], make_mail())

    assert await asyncio.to_thread(run) == {}
    [(event, _)] = await ingress.events()
    assert event.smtp is not None
    assert (event.smtp.helo, event.smtp.esmtp) == ("old.client.example", False)
    assert parse_received((await stored(ingress, event))[0])["protocol"] == "SMTP"


@pytest.mark.parametrize("helo", [
    b"evil.example\rX-Injected: yes",
    b"evil.example (localhost [127.0.0.1])\tby trusted.example with ESMTPSA id X; date",
    "f\u00fcr.example \u202e".encode(),
    b"x" * 400,
])
async def test_a_hostile_helo_cannot_break_the_stored_mail(ingress: Ingress, helo: bytes) -> None:
    raw = make_mail()
    payload = (b"EHLO " + helo + b"\r\n"
               + commands("MAIL FROM:<a@b.example>", f"RCPT TO:<{ACME}>", "DATA")
               + raw + b".\r\n" + commands("QUIT"))
    replies = await asyncio.to_thread(raw_session, ingress.port, payload, wait_for_replies=6)
    assert b"250 2.0.0 Message accepted\r\n" in replies
    [(event, _)] = await ingress.events()
    received, content = await stored(ingress, event)
    assert content == raw
    trace = parse_received(received)  # still exactly our header, in its form
    assert set(trace["helo"]) <= set(string.ascii_letters + string.digits + ".-_:[]?")
    assert trace["by"] == "postroom.local" and trace["ip"] == "127.0.0.1"
    assert event.smtp is not None
    assert event.smtp.helo == helo.decode()  # the event keeps what was given
    from email import message_from_bytes, policy

    msg = message_from_bytes(received + content, policy=policy.default)
    assert "X-Injected" not in msg
    assert len(msg.get_all("Received") or []) == 1


# --- trusted networks: exempt from the per-IP cap ----------------------------------------------


async def open_sessions(port: int, count: int) -> list[tuple[asyncio.StreamReader,
                                                             asyncio.StreamWriter, bytes]]:
    """``count`` connections at once, each with the first line the server sent."""
    async def one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return reader, writer, await asyncio.wait_for(reader.readline(), 30)

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def converse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   lines: list[bytes]) -> list[bytes]:
    """Send each command (or DATA's content) and read its final reply line."""
    finals = []
    for line in lines:
        writer.write(line)
        await writer.drain()
        while True:
            reply = await asyncio.wait_for(reader.readline(), 30)
            if reply[3:4] != b"-":
                break
        finals.append(reply.rstrip())
    return finals


async def test_fifty_sessions_from_loopback_are_all_served(ingress: Ingress) -> None:
    assert ingress.settings.smtp_max_connections_per_ip == 20  # the default cap
    sessions = await open_sessions(ingress.port, 50)
    assert [greeting[:4] for _, _, greeting in sessions] == [b"220 "] * 50
    # all 50 are open at the same time
    assert ingress.metric("postroom_smtp_sessions_active") == 50

    async def deliver(i: int, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> list[bytes]:
        try:
            return await converse(reader, writer, [
                b"EHLO load.example\r\n", b"MAIL FROM:<a@b.example>\r\n",
                f"RCPT TO:<{ACME}>\r\n".encode(), b"DATA\r\n",
                make_mail(message_id=f"<load-{i}@x>") + b".\r\n", b"QUIT\r\n",
            ])
        finally:
            writer.close()

    replies = await asyncio.gather(*(deliver(i, r, w) for i, (r, w, _) in enumerate(sessions)))
    assert [reply[4] for reply in replies] == [b"250 2.0.0 Message accepted"] * 50
    events = [e for e, _ in await ingress.events()]
    assert sorted(e.message_id for e in events) == sorted(f"<load-{i}@x>" for i in range(50))
    assert ingress.metric("postroom_smtp_connections_refused_total") == 0
    await wait_for(lambda: ingress.metric("postroom_smtp_sessions_active") == 0)


async def test_the_cap_applies_to_loopback_when_it_is_not_trusted(start_ingress: Any) -> None:
    ingress = await start_ingress(smtp_trusted_networks="10.0.0.0/8,2001:db8::/32")
    sessions = await open_sessions(ingress.port, 50)
    greetings = sorted(greeting.rstrip()[:32] for _, _, greeting in sessions)
    assert greetings.count(b"421 4.7.0 Too many connections") == 30
    assert sum(g.startswith(b"220 ") for g in greetings) == 20
    assert ingress.metric("postroom_smtp_connections_refused_total") == 30
    assert ingress.metric("postroom_smtp_sessions_active") == 20
    for _, writer, _ in sessions:
        writer.close()
    await wait_for(lambda: ingress.metric("postroom_smtp_sessions_active") == 0)


# --- SMTPUTF8, connection cap -----------------------------------------------------------------


async def test_smtputf8_addresses(ingress: Ingress) -> None:
    recipient = "jürgen+globex@globex.example"
    raw = make_mail(to=recipient, subject="Grüße")  # raw UTF-8 headers (RFC 6532)

    def run() -> Any:
        with smtp(ingress) as client:
            assert "smtputf8" in client.esmtp_features
            return client.sendmail("käufer@lieferant.example", [recipient], raw,
                                   mail_options=["SMTPUTF8"])

    refused = await asyncio.to_thread(run)
    assert refused == {}
    [(event, _)] = await ingress.events()
    assert event.tenant == "globex" and event.mailbox == "jürgen"
    assert event.recipients == [recipient]
    assert event.envelope_from == "käufer@lieferant.example"
    assert event.subject == "Grüße"


async def test_per_ip_connection_cap(start_ingress: Any) -> None:
    # loopback is trusted by default (exempt from the cap): trust another network only
    ingress = await start_ingress(smtp_max_connections_per_ip=2,
                                  smtp_trusted_networks="10.0.0.0/8")
    first, second = await asyncio.to_thread(lambda: (smtp(ingress), smtp(ingress)))

    def third() -> bytes:
        with socket.create_connection(("127.0.0.1", ingress.port), timeout=10) as sock:
            return sock.makefile("rb").read()  # the reply, then the server closes

    assert await asyncio.to_thread(third) == b"421 4.7.0 Too many connections\r\n"
    assert ingress.metric("postroom_smtp_connections_refused_total") == 1
    assert ingress.metric("postroom_smtp_sessions_active") == 2

    await asyncio.to_thread(first.quit)
    await wait_for(lambda: ingress.metric("postroom_smtp_sessions_active") == 1)
    fourth = await asyncio.to_thread(smtp, ingress)  # a slot is free again
    assert (await asyncio.to_thread(fourth.noop))[0] == 250
    await asyncio.to_thread(second.quit)
    await asyncio.to_thread(fourth.quit)
    await wait_for(lambda: ingress.metric("postroom_smtp_sessions_active") == 0)


# --- telemetry, HTTP ----------------------------------------------------------------------------


async def test_data_span_is_the_parent_of_the_publish(ingress: Ingress) -> None:
    assert (await send(ingress, [ACME], make_mail()))[0] == 250
    [(event, headers)] = await ingress.events()
    ingress.runtime.tracer_provider.force_flush()
    spans = ingress.spans.get_finished_spans()
    [data_span] = [s for s in spans if s.name == "smtp DATA"]
    assert data_span.attributes is not None
    assert data_span.attributes["smtp.result"] == "accepted"
    assert list(data_span.attributes["postroom.mail_keys"]) == [event.mail_key]
    assert list(data_span.attributes["postroom.tenants"]) == ["acme"]
    assert data_span.attributes["smtp.message.size"] == len(make_mail())  # as the client sent it
    trace_id = format(data_span.context.trace_id, "032x")
    # the event carries the trace: every consumer continues it
    assert headers["traceparent"].split("-")[1] == trace_id
    publish = [s for s in spans if s.parent is not None
               and s.parent.span_id == data_span.context.span_id]
    assert publish, [s.name for s in spans]


async def test_logs_carry_mail_key_not_addresses(ingress: Ingress) -> None:
    from postroom_runtime.logs import _ContextFilter, setup_logging

    records: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("mail.log").level
    setup_logging("smtp-ingress", "DEBUG")  # the production set-up, at its most verbose
    handler = Capture()
    handler.addFilter(_ContextFilter("smtp-ingress"))  # what the JSON log handler uses
    root.addHandler(handler)
    try:
        assert (await send(ingress, [ACME], make_mail()))[0] == 250
        assert (await send(ingress, [ACME], make_mail()))[0] == 250
    finally:
        root.handlers[:], level, mail_level = saved
        root.setLevel(level)
        logging.getLogger("mail.log").setLevel(mail_level)
    key = mail_key("acme", "<order-1@supplier.example>", sha256(make_mail()))
    mine = [r for r in records if r.name == "postroom_smtp_ingress"]
    assert {r.getMessage(): getattr(r, "mail_key", None) for r in mine} == {
        "mail accepted": key, "duplicate mail accepted without a new event": key}
    assert all(getattr(r, "trace_id", None) for r in mine)
    assert records
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in records)
    for secret in ("buyer@supplier.example", "orders+acme", "Purchase order"):
        assert secret not in text


async def test_metrics_and_tenants_endpoints(ingress: Ingress) -> None:
    assert (await send(ingress, [ACME], make_mail()))[0] == 250
    base = f"http://127.0.0.1:{ingress.runtime.http_port}"
    async with httpx.AsyncClient(base_url=base) as client:
        metrics = (await client.get("/metrics")).text
        tenants = (await client.get("/tenants")).json()
        ready = await client.get("/health/ready")
    assert 'postroom_smtp_messages_total{result="accepted"} 1.0' in metrics
    assert "postroom_smtp_data_duration_seconds_count 1.0" in metrics
    assert "postroom_smtp_sessions_active" in metrics
    assert tenants == {"tenants": [
        {"slug": "acme", "domains": [DOMAIN]},
        {"slug": "globex", "domains": ["globex.example", DOMAIN]},
    ]}
    assert ready.status_code == 200


async def test_on_postgresql(start_ingress: Any, postgres_url: str) -> None:
    ingress = await start_ingress(database_url=postgres_url)
    raws = [make_mail(message_id=f"<pg-{i}@supplier.example>") for i in range(5)]
    replies = await asyncio.gather(*(send(ingress, [ACME], raw) for raw in raws))
    assert set(replies) == {(250, b"2.0.0 Message accepted")}
    assert await send(ingress, [ACME], raws[0]) == (250, b"2.0.0 Message accepted (duplicate)")
    assert len(await ingress.rows()) == 5
    assert len(await ingress.events()) == 5


async def test_idle_session_times_out(start_ingress: Any) -> None:
    ingress = await start_ingress(smtp_timeout=0.5)

    def idle() -> tuple[bytes, bytes, float]:
        with socket.create_connection(("127.0.0.1", ingress.port), timeout=10) as sock:
            reader = sock.makefile("rb")
            greeting = reader.readline()
            started = time.monotonic()
            return greeting, reader.read(), time.monotonic() - started

    greeting, rest, waited = await asyncio.to_thread(idle)
    assert greeting.startswith(b"220 ")
    assert rest == b""  # closed by the server
    assert 0.3 < waited < 5


async def test_seed_never_overwrites_the_registry(
    nats_server: NatsServer, start_ingress: Any
) -> None:
    import nats

    nc = await nats.connect(nats_server.url)
    try:
        # acme as an operator changed it: another domain, no "orders" mailbox
        await put_tenant(nc.jetstream(), Tenant(slug="acme", domains=["acme.example"],
                                                mailboxes={"sales": {}}))
    finally:
        await nc.close()
    ingress = await start_ingress()
    acme = ingress.runtime.smtp.tenant("acme")
    assert acme is not None and acme.domains == ["acme.example"]
    assert ingress.runtime.smtp.tenant("globex") is not None  # the seed added the others
    rcpt, _ = await asyncio.to_thread(transaction, ingress, [ACME, "sales+acme@acme.example"],
                                      make_mail())
    assert rcpt == [(550, b"5.1.1 Unknown recipient"), (250, b"2.1.5 Recipient OK")]


async def test_tenant_disabled_at_runtime_stops_receiving(ingress: Ingress) -> None:
    assert (await send(ingress, [ACME], make_mail()))[0] == 250
    acme = ingress.runtime.smtp.tenant("acme")
    assert acme is not None
    await put_tenant(ingress.runtime.js, acme.model_copy(update={"enabled": False}))
    await wait_for(lambda: ingress.runtime.smtp.tenant("acme") is None)
    rcpt, _ = await asyncio.to_thread(transaction, ingress, [ACME], make_mail())
    assert rcpt == [(550, b"5.1.1 Unknown recipient")]
