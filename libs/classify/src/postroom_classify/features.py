"""What the model sees of a mail: subject, body text, a few headers, attachment types,
the DMARC verdict and whether a tenant's route (a PBX) matched. The same record comes from
an ``.eml`` file (``postroom classify``), a corpus line (JSONL) or a mail.parsed event plus
the raw mail's headers (the service)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from email import policy
from email.message import Message
from email.parser import BytesParser
from typing import Any

LABELS: tuple[str, ...] = (
    "meeting", "promotion", "intro", "voicemail", "order", "support", "spam", "unknown")

HEADERS_OF_INTEREST = ("list-unsubscribe", "list-id", "precedence", "auto-submitted",
                       "x-mailer", "importance")
MAX_BODY = 6000
_DMARC = re.compile(r"\bdmarc\s*=\s*(\w+)", re.I)


@dataclass
class MailFeatures:
    subject: str = ""
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    attachments: list[str] = field(default_factory=list)  # content types, lower-case
    dmarc: str = "none"  # pass, fail, none (no verdict)
    routed: bool = False  # a tenant's route (PBX) matched

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MailFeatures:
        return cls(subject=data.get("subject") or "", body=data.get("body") or "",
                   headers={k.lower(): str(v) for k, v in (data.get("headers") or {}).items()},
                   attachments=[a.lower() for a in data.get("attachments") or []],
                   dmarc=(data.get("dmarc") or "none").lower(), routed=bool(data.get("routed")))


def headers_of_interest(msg: Message) -> dict[str, str]:
    found = {}
    for name in HEADERS_OF_INTEREST:
        value = msg.get(name)
        if value is not None:
            found[name] = str(value)[:500]
    return found


def dmarc_verdict(msg: Message) -> str:
    for value in msg.get_all("authentication-results") or []:
        m = _DMARC.search(str(value))
        if m:
            return "pass" if m.group(1).lower() == "pass" else (
                "fail" if m.group(1).lower() in ("fail", "reject", "quarantine") else "none")
    return "none"


def features_from_message(msg: Message, *, routed: bool = False) -> MailFeatures:
    """Features of a parsed ``email.message.Message`` (policy.default)."""
    body_parts: list[str] = []
    attachments: list[str] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type().lower()
        disposition = (part.get_content_disposition() or "").lower()
        if ctype == "text/plain" and disposition != "attachment":
            try:
                body_parts.append(str(part.get_content()))
            except (LookupError, ValueError):
                body_parts.append(part.get_payload(decode=True).decode("utf-8", "replace"))
        elif ctype == "text/html" and disposition != "attachment" and not body_parts:
            try:
                html = str(part.get_content())
            except (LookupError, ValueError):
                html = ""
            body_parts.append(re.sub(r"<[^>]+>", " ", html))
        elif ctype not in ("text/plain", "text/html"):
            attachments.append(ctype)
    return MailFeatures(subject=str(msg.get("subject") or ""),
                        body="\n".join(body_parts)[:MAX_BODY],
                        headers=headers_of_interest(msg), attachments=attachments,
                        dmarc=dmarc_verdict(msg), routed=routed)


def features_from_eml(data: bytes, *, routed: bool = False) -> MailFeatures:
    msg = BytesParser(policy=policy.default).parsebytes(data)
    return features_from_message(msg, routed=routed)


def parse_headers(data: bytes) -> Message:
    """Only the header block of a raw mail (the service reads the body from mail.parsed)."""
    return BytesParser(policy=policy.default).parsebytes(data, headersonly=True)


def structure_tokens(f: MailFeatures) -> str:
    """The mail's structure as words for a bag-of-words vectoriser."""
    tokens: list[str] = []
    h = f.headers
    if "list-unsubscribe" in h:
        tokens.append("s_list_unsubscribe")
    if "list-id" in h:
        tokens.append("s_list_id")
    prec = h.get("precedence", "").strip().lower()
    if prec:
        tokens.append(f"s_precedence_{re.sub(r'[^a-z]', '', prec) or 'other'}")
    auto = h.get("auto-submitted", "").strip().lower()
    if auto and auto != "no":
        tokens.append("s_auto_submitted")
    for a in f.attachments:
        if a == "text/calendar" or a == "application/ics":
            tokens.append("s_att_calendar")
        elif a.startswith("audio/"):
            tokens.append("s_att_audio")
        elif a == "application/pdf":
            tokens.append("s_att_pdf")
        elif "spreadsheet" in a or "excel" in a or a == "text/csv":
            tokens.append("s_att_sheet")
        elif a.startswith("image/"):
            tokens.append("s_att_image")
        elif "zip" in a or "msdownload" in a or "octet-stream" in a:
            tokens.append("s_att_binary")
        else:
            tokens.append("s_att_other")
    if not f.attachments:
        tokens.append("s_att_none")
    tokens.append(f"s_dmarc_{f.dmarc}")
    if f.routed:
        tokens.append("s_routed")
    if len(f.body) < 80:
        tokens.append("s_body_short")
    if len(re.findall(r"https?://", f.body)) >= 3:
        tokens.append("s_many_links")
    return " ".join(tokens)


def text_of(f: MailFeatures) -> str:
    return f"{f.subject}\n{f.subject}\n{f.body[:MAX_BODY]}"
