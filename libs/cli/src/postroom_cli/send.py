"""``postroom send``: a test mail over SMTP (smtplib), with optional demo attachments."""

from __future__ import annotations

import mimetypes
import smtplib
import ssl
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Annotated

import typer

from .common import describe, fail
from .demo import DEMO_BODY, DEMO_SUBJECT, Attachment, purchase_order_attachments

DEFAULT_SERVER = "127.0.0.1:1025"
DEFAULT_TO = "orders+acme@intake.example.com"
DEFAULT_FROM = "purchasing@northwind.example"


def parse_server(server: str) -> tuple[str, int]:
    host, sep, port = server.rpartition(":")
    if not sep:
        return server, 25
    host = host.strip("[]")  # [::1]:1025
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise typer.BadParameter(f"expected HOST:PORT, got {server!r}", param_hint="--server")
    return host, int(port)


def file_attachment(path: Path) -> Attachment:
    try:
        data = path.read_bytes()
    except OSError as exc:
        fail(f"cannot read attachment {path}: {exc.strerror or exc}")
    content_type, encoding = mimetypes.guess_type(path.name)
    if content_type is None or encoding is not None:
        content_type = "application/octet-stream"
    return Attachment(path.name, content_type, data)


def build_message(
    *,
    sender: str,
    recipients: list[str],
    subject: str,
    body: str,
    attachments: list[Attachment],
    message_id: str | None,
) -> EmailMessage:
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=True)
    if message_id:
        message_id = message_id.strip()
        if not message_id.startswith("<"):
            message_id = f"<{message_id}>"
    msg["Message-ID"] = message_id or make_msgid(domain="postroom.local")
    msg.set_content(body)
    for item in attachments:
        maintype, _, subtype = item.content_type.partition("/")
        msg.add_attachment(item.data, maintype=maintype, subtype=subtype, filename=item.filename)
    return msg


def reply_text(resp: bytes | str) -> str:
    text = resp.decode(errors="replace") if isinstance(resp, bytes) else resp
    return " ".join(text.split())


def deliver(
    msg: EmailMessage,
    *,
    host: str,
    port: int,
    sender: str,
    recipients: list[str],
    starttls: bool,
    insecure: bool,
    user: str | None,
    password: str | None,
    timeout: float,
) -> tuple[int, str]:
    """Speak SMTP step by step, so the final reply (DATA, or the step that failed) is known."""
    where = f"{host}:{port}"
    try:
        with smtplib.SMTP(host, port, timeout=timeout) as smtp:
            smtp.ehlo_or_helo_if_needed()
            if starttls:
                context = ssl.create_default_context()
                if insecure:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                smtp.starttls(context=context)
                smtp.ehlo()
            if user is not None:
                smtp.login(user, password or "")
            code, resp = smtp.mail(sender)
            if code != 250:
                return code, reply_text(resp)
            accepted = 0
            last_refusal: tuple[int, str] = (0, "")
            for rcpt in recipients:
                code, resp = smtp.rcpt(rcpt)
                if code in (250, 251):
                    accepted += 1
                else:
                    last_refusal = (code, reply_text(resp))
                    typer.echo(f"recipient {rcpt} refused: {code} {reply_text(resp)}", err=True)
            if accepted == 0:
                smtp.rset()
                return last_refusal
            code, resp = smtp.data(msg.as_bytes())
            return code, reply_text(resp)
    except smtplib.SMTPNotSupportedError as exc:
        fail(f"{where}: {describe(exc)} (the server offers no STARTTLS or AUTH)")
    except smtplib.SMTPResponseException as exc:  # STARTTLS or AUTH refused, 421 ...
        return exc.smtp_code, reply_text(exc.smtp_error)
    except smtplib.SMTPServerDisconnected as exc:
        fail(f"{where} closed the connection: {describe(exc)}")
    except ssl.SSLError as exc:
        fail(f"TLS with {where} failed: {describe(exc)} (--insecure skips certificate checks)")
    except OSError as exc:  # refused, unreachable, timed out
        fail(f"cannot connect to the SMTP server at {where}: {describe(exc)}")


def send(
    server: Annotated[
        str, typer.Option("--server", "-s", help="SMTP server HOST:PORT.")
    ] = DEFAULT_SERVER,
    sender: Annotated[str, typer.Option("--from", "-f", help="Envelope and header sender.")] = (
        DEFAULT_FROM
    ),
    to: Annotated[
        list[str] | None,
        typer.Option("--to", "-t", help=f"Recipient (repeatable). Default: {DEFAULT_TO}"),
    ] = None,
    subject: Annotated[str | None, typer.Option("--subject", help="Subject line.")] = None,
    body: Annotated[str | None, typer.Option("--body", help="Plain-text body.")] = None,
    attach: Annotated[
        list[Path] | None,
        typer.Option("--attach", "-a", help="Attach a file (repeatable).", dir_okay=False),
    ] = None,
    demo: Annotated[
        bool,
        typer.Option("--demo", help="Attach a generated purchase order as PDF, XLSX and CSV."),
    ] = False,
    message_id: Annotated[
        str | None, typer.Option("--message-id", help="Message-ID (default: a new one).")
    ] = None,
    starttls: Annotated[bool, typer.Option("--starttls", help="Upgrade with STARTTLS.")] = False,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="With --starttls: do not verify the certificate.")
    ] = False,
    user: Annotated[str | None, typer.Option("--user", help="SMTP AUTH user.")] = None,
    password: Annotated[
        str | None, typer.Option("--password", envvar="POSTROOM_SMTP_PASSWORD",
                                 help="SMTP AUTH password.")
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per SMTP step.")] = 30.0,
) -> None:
    """Send a test mail; prints the server's final reply. Exit code 0 only on 250."""
    host, port = parse_server(server)
    recipients = to or [DEFAULT_TO]
    attachments = [file_attachment(p) for p in attach or []]
    if demo:
        attachments += purchase_order_attachments()
    default_subject = DEMO_SUBJECT if demo else "Test mail from postroom send"
    default_body = DEMO_BODY if demo else "This is a test mail sent with `postroom send`.\n"
    msg = build_message(
        sender=sender,
        recipients=recipients,
        subject=subject if subject is not None else default_subject,
        body=body if body is not None else default_body,
        attachments=attachments,
        message_id=message_id,
    )
    code, text = deliver(
        msg, host=host, port=port, sender=sender, recipients=recipients, starttls=starttls,
        insecure=insecure, user=user, password=password, timeout=timeout,
    )
    typer.echo(f"Message-ID: {msg['Message-ID']}")
    if attachments:
        typer.echo("attached: " + ", ".join(f"{a.filename} ({len(a.data)} bytes)"
                                            for a in attachments))
    typer.echo(f"{code} {text}")
    if code != 250:
        raise typer.Exit(1)
