"""Real SMTP sessions (smtplib, raw sockets) against the service running in-process with a real
nats-server: reply codes, events in the stream, rows in the store."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import smtplib
import socket
import time
from typing import Any

import httpx
import pytest
from smtp_ingress_testkit import DOMAIN, Ingress, make_mail, wait_for

from postroom_contracts import BlobRef, Tenant, derive_event_id, mail_key
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


# --- 250 and 250 duplicate ------------------------------------------------------------------


async def test_accepted_mail_is_stored_published_and_recorded(ingress: Ingress) -> None:
    raw = make_mail()
    assert await send(ingress, [ACME], raw) == (250, b"2.0.0 Message accepted")

    [(event, headers)] = await ingress.events()
    key = mail_key("acme", "<order-1@supplier.example>")
    assert event.tenant == "acme" and event.mail_key == key
    assert event.event_id == derive_event_id(key, "mail.received")
    assert headers["Nats-Msg-Id"] == event.event_id
    assert (event.mailbox, event.actions, event.recipients) == ("orders", ["extract"], [ACME])
    assert event.envelope_from == SENDER
    assert event.subject == "Purchase order 4711"
    assert event.message_id == "<order-1@supplier.example>" and not event.message_id_synthetic
    assert (event.tls, event.authenticated) == (False, False)
    # claim check: the blob holds exactly the bytes received
    assert event.size == len(raw) == event.raw.size
    assert event.raw.sha256 == hashlib.sha256(raw).hexdigest()
    assert ingress.runtime.blobs is not None
    assert await ingress.runtime.blobs.get(event.raw) == raw
    assert event.raw.bucket == "postroom-blobs-small"  # one round trip, not three

    [row] = await ingress.rows()
    assert (row["tenant"], row["message_id"], row["mail_key"], row["event_id"]) == (
        "acme", "<order-1@supplier.example>", key, event.event_id)
    assert (row["raw_sha256"], row["size"], row["state"]) == (event.raw.sha256, len(raw),
                                                              "RECEIVED")
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
    assert ingress.runtime.blobs is not None
    assert await ingress.runtime.blobs.get(events["<l@x>"].raw) == large


async def test_same_message_id_again_is_a_duplicate_without_new_event(ingress: Ingress) -> None:
    assert (await send(ingress, [ACME], make_mail()))[0] == 250
    # a resend with another body but the same Message-ID, to another mailbox of the tenant
    again = make_mail(body="resent", to=f"support+acme@{DOMAIN}")
    assert await send(ingress, [f"support+acme@{DOMAIN}"], again) == (
        250, b"2.0.0 Message accepted (duplicate)")
    assert len(await ingress.events()) == 1
    assert len(await ingress.rows()) == 1
    assert ingress.metric("postroom_smtp_messages_total", result="duplicate") == 1


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
    assert events["acme"].mail_key == mail_key("acme", "<order-1@supplier.example>")
    assert events["globex"].mail_key == mail_key("globex", "<order-1@supplier.example>")
    assert events["acme"].raw == events["globex"].raw  # one blob
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
    assert ingress.runtime.blobs is not None
    assert await ingress.runtime.blobs.get(event.raw) == raw


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
    ingress = await start_ingress(smtp_max_connections_per_ip=2)
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
    assert data_span.attributes["smtp.message.size"] == event.size
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
    key = mail_key("acme", "<order-1@supplier.example>")
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
