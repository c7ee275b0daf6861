"""Building the message a delivery.requested asks for (pure: bytes in, bytes out).

- ``forward``: the original raw MIME, unchanged.
- ``voicemail``: the original, enhanced: the transcripts (from the tenant's or the packaged
  Jinja2 templates) at the top of its text/plain and text/html bodies (created when the PBX
  sent only the attachment), a subject marker, a new Message-ID derived from the delivery id,
  its DKIM-Signature fields dropped (they would no longer verify); everything else, the audio
  attachments and the threading fields included, as it was.
- ``reply`` / ``notification``: a new mail from the request's fields (or a template).

A header value of the request with CR or LF is refused (:class:`HeaderInjection`): it could
add header fields or a body of its sender's choosing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PackageLoader, select_autoescape

from postroom_contracts import DeliveryRequested

SUBJECT_MARKER = "[Voicemail"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class HeaderInjection(ValueError):
    """A header value of the request holds CR or LF."""


class ComposeError(ValueError):
    """The request cannot be composed (e.g. the original is missing); retrying cannot help."""


@dataclass(frozen=True)
class Composed:
    message: bytes
    message_id: str
    subject: str
    envelope_from: str
    recipients: list[str]


def message_id_for(delivery_id: str, domain: str) -> str:
    """The Message-ID of a composed mail: the same delivery always gets the same one."""
    return f"<{delivery_id}@{domain}>"


def check_headers(event: DeliveryRequested) -> None:
    """Refuse CR or LF in anything of the request that ends up in a header or the envelope."""
    values: list[tuple[str, str | None]] = [
        ("subject", event.subject), ("from_address", event.from_address),
        ("in_reply_to", event.in_reply_to), ("envelope_from", event.envelope_from),
    ]
    values += [("to", v) for v in event.to]
    values += [("references", v) for v in event.references]
    for name, value in event.headers.items():
        values += [("header name", name), (f"header {name[:40]!r}", value)]
    for field, value in values:
        if value is not None and ("\r" in value or "\n" in value):
            raise HeaderInjection(f"refused: {field} holds CR or LF")


def _one_line(value: Any) -> str:
    return _CONTROL.sub(" ", str(value)).strip()


def _duration(seconds: Any) -> str | None:
    try:
        total = round(float(seconds))
    except (TypeError, ValueError):
        return None
    return f"{total // 60}:{total % 60:02d}"


class Templates:
    """Jinja2 templates: ``<dir>/<tenant>/<name>``, then ``<dir>/<name>``, then the package's."""

    def __init__(self, directory: Path | None = None) -> None:
        loaders: list[Any] = []
        if directory is not None:
            loaders.append(FileSystemLoader(str(directory)))
        loaders.append(PackageLoader("postroom_mailer", "templates"))
        self.env = Environment(
            loader=ChoiceLoader(loaders),
            autoescape=select_autoescape(enabled_extensions=("html", "html.j2"),
                                         default_for_string=False),
            keep_trailing_newline=True,
        )

    def render(self, tenant: str, name: str, data: Mapping[str, Any]) -> str:
        template = self.env.select_template([f"{tenant}/{name}", name])
        return template.render(**data)

    def has(self, tenant: str, name: str) -> bool:
        try:
            self.env.select_template([f"{tenant}/{name}", name])
        except Exception:
            return False
        return True


def voicemail_context(template_data: Mapping[str, Any]) -> dict[str, Any]:
    """What the voicemail templates see: ``transcripts`` (in order), ``call``, ``duration``."""
    transcripts = [dict(t) for t in template_data.get("transcripts") or []
                   if isinstance(t, Mapping)]
    transcripts.sort(key=lambda t: t.get("index", 0) if isinstance(t.get("index"), int) else 0)
    for t in transcripts:
        t.setdefault("status", "transcribed")
        t.setdefault("text", "")
        t.setdefault("confidence", None)
        t.setdefault("error", None)
        t.setdefault("filename", None)
    call = dict(template_data.get("call") or {})
    if not call:
        for t in transcripts:
            if isinstance(t.get("call"), Mapping) and any(t["call"].values()):
                call = dict(t["call"])
                break
    for key in ("caller_name", "caller_number", "mailbox", "mailbox_name", "called_at"):
        call.setdefault(key, None)
    seconds = call.get("duration_seconds")
    if seconds is None and transcripts:
        measured = [t.get("duration_seconds") for t in transcripts]
        if all(isinstance(s, int | float) for s in measured):
            seconds = sum(measured)  # type: ignore[arg-type]
    return {"transcripts": transcripts, "call": call, "duration": _duration(seconds)}


def subject_marker(call: Mapping[str, Any]) -> str:
    caller = " ".join(_one_line(call[k]) for k in ("caller_name", "caller_number")
                      if call.get(k))
    return f"[Voicemail from {caller}] " if caller else "[Voicemail] "


def _insert_html(html: str, block: str) -> str:
    match = re.search(r"<body[^>]*>", html, re.IGNORECASE)
    if match is None:
        return block + html
    return html[:match.end()] + block + html[match.end():]


def parse(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def _text_part(text: str, subtype: str) -> EmailMessage:
    part = EmailMessage()
    part.set_content(text, subtype=subtype, charset="utf-8")
    return part


def enhance_voicemail(raw: bytes, *, tenant: str, template_data: Mapping[str, Any],
                      templates: Templates, message_id: str) -> tuple[bytes, str]:
    """The original voicemail mail with the transcripts on top; returns (bytes, subject)."""
    message = parse(raw)
    context = voicemail_context(template_data)
    text_block = templates.render(tenant, "voicemail.txt.j2", context)
    html_block = templates.render(tenant, "voicemail.html.j2", context)

    plain = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    if plain is None and html is None:
        # only an attachment (or nothing readable): new text and HTML bodies in front
        alternative = EmailMessage()
        alternative.make_alternative()
        alternative.attach(_text_part(text_block, "plain"))
        alternative.attach(_text_part(f"<html><body>{html_block}</body></html>", "html"))
        if not message.is_multipart():
            message.make_mixed()
        elif message.get_content_subtype() == "alternative":
            message.make_mixed()
        payload = message.get_payload()
        assert isinstance(payload, list)
        del alternative["MIME-Version"]
        payload.insert(0, alternative)
    else:
        if plain is not None:
            plain.set_content(text_block + plain.get_content(), subtype="plain",
                              charset="utf-8")
        if html is not None:
            html.set_content(_insert_html(html.get_content(), html_block), subtype="html",
                             charset="utf-8")

    subject = _one_line(message.get("Subject", "") or "")
    if not subject.startswith(SUBJECT_MARKER):
        subject = subject_marker(context["call"]) + subject
    del message["Subject"]
    message["Subject"] = subject
    del message["DKIM-Signature"]
    del message["Message-ID"]
    message["Message-ID"] = message_id
    return message.as_bytes(policy=policy.SMTP), subject


def new_mail(event: DeliveryRequested, *, templates: Templates, message_id: str,
             default_from: str) -> tuple[bytes, str]:
    """A new mail (reply, notification) from the request's fields; returns (bytes, subject)."""
    data = {**event.template_data, "subject": event.subject, "body_text": event.body_text,
            "body_html": event.body_html}
    text = event.body_text
    html = event.body_html
    if event.template:
        if templates.has(event.tenant, f"{event.template}.txt.j2"):
            text = templates.render(event.tenant, f"{event.template}.txt.j2", data)
        if templates.has(event.tenant, f"{event.template}.html.j2"):
            html = templates.render(event.tenant, f"{event.template}.html.j2", data)
    message = EmailMessage()
    subject = event.subject or ""
    message["From"] = event.from_address or default_from
    message["To"] = ", ".join(event.to)
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id
    if event.in_reply_to:
        message["In-Reply-To"] = event.in_reply_to
    references = list(event.references)
    if event.in_reply_to and event.in_reply_to not in references:
        references.append(event.in_reply_to)
    if references:
        message["References"] = " ".join(references)
    for name, value in event.headers.items():
        del message[name]
        message[name] = value
    message.set_content(text or "", charset="utf-8")
    if html:
        message.add_alternative(html, subtype="html", charset="utf-8")
    return message.as_bytes(policy=policy.SMTP), subject


def header_message_id(raw: bytes) -> str | None:
    message = parse(raw)
    value = message.get("Message-ID")
    return _one_line(value) if value else None


def compose(event: DeliveryRequested, original: bytes | None, *, templates: Templates,
            message_id_domain: str, default_from: str,
            default_envelope_from: str | None) -> Composed:
    """The bytes to send for ``event`` (raises HeaderInjection or ComposeError)."""
    check_headers(event)
    derived = message_id_for(event.delivery_id, message_id_domain)
    if event.kind in ("forward", "voicemail"):
        if original is None:
            raise ComposeError(f"a {event.kind} delivery needs the original mail")
        if event.kind == "forward":
            message = original
            message_id = header_message_id(original) or derived
            subject = _one_line(parse(original).get("Subject", "") or "")
        else:
            message, subject = enhance_voicemail(
                original, tenant=event.tenant, template_data=event.template_data,
                templates=templates, message_id=derived)
            message_id = derived
    else:
        message, subject = new_mail(event, templates=templates, message_id=derived,
                                    default_from=default_from)
        message_id = derived
    envelope_from = _envelope_from(event, default_envelope_from)
    return Composed(message, message_id, subject, envelope_from, list(event.to))


def _envelope_from(event: DeliveryRequested, default: str | None) -> str:
    if event.envelope_from is not None:
        return event.envelope_from
    if default is not None:
        return default
    if event.original_envelope_from is not None:
        return event.original_envelope_from
    return event.from_address or ""

