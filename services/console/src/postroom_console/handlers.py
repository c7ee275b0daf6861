"""The projection's rules: how each event changes the read model. Pure (no I/O): the
projector loads the rows a batch touches, :func:`apply` changes them in memory, the projector
writes them back in the batch's transaction.

Everything written here is derived from the events alone (times are the events' own, never
the clock), so a rebuild from the stream gives the same rows as the live projection.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from postroom_contracts import (
    BY_TYPE,
    DeliveryFailed,
    DeliveryRequested,
    DeliverySent,
    DocumentStored,
    Event,
    MailAuthenticated,
    MailClassified,
    MailFailed,
    MailLabelCorrected,
    MailParsed,
    MailReceived,
    ReplyDrafted,
    ReplyReviewed,
    ReplySkipped,
    VoicemailTranscribed,
    reply_id_for,
)
from postroom_contracts import headers as contract_headers
from postroom_contracts.subjects import PREFIX

STATUS_RANK = {"received": 0, "parsed": 1, "classified": 2}
FAILED = "failed"


@dataclass
class Incoming:
    """One message of the stream, as the projector hands it over."""

    sequence: int
    subject: str
    headers: dict[str, str]
    data: bytes
    _payload: Any = field(default=None, repr=False)
    _error: str | None = field(default=None, repr=False)

    def payload(self) -> dict[str, Any]:
        """The decoded JSON object (decoded once); ValueError when it is not one."""
        if self._payload is None and self._error is None:
            try:
                value = json.loads(self.data)
                if not isinstance(value, dict):
                    raise ValueError("payload is not a JSON object")
                self._payload = value
            except ValueError as exc:
                self._error = str(exc)
        if self._error is not None:
            raise ValueError(self._error)
        return dict(self._payload)


@dataclass
class Batch:
    """The rows one transaction reads and writes; filled by the projector before ``apply``."""

    mails: dict[str, dict[str, Any]] = field(default_factory=dict)
    new_mails: set[str] = field(default_factory=set)
    dirty_mails: set[str] = field(default_factory=set)
    deliveries: dict[str, dict[str, Any]] = field(default_factory=dict)
    new_deliveries: set[str] = field(default_factory=set)
    dirty_deliveries: set[str] = field(default_factory=set)
    replies: dict[str, dict[str, Any]] = field(default_factory=dict)
    new_replies: set[str] = field(default_factory=set)
    dirty_replies: set[str] = field(default_factory=set)
    seen_event_ids: set[str] = field(default_factory=set)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    # (timeline row, the mail's row right after the event): the live feed's messages
    applied: list[tuple[dict[str, Any], dict[str, Any] | None]] = field(default_factory=list)
    last_sequence: int = 0


def event_type_of(subject: str, headers: dict[str, str]) -> str:
    """``postroom.<event type>.<tenant>`` -> the event type (the header when present)."""
    declared = headers.get(contract_headers.EVENT_TYPE)
    if declared:
        return declared
    body = subject.removeprefix(f"{PREFIX}.")
    return body.rsplit(".", 1)[0] if "." in body else body


def trace_id_of(headers: dict[str, str]) -> str | None:
    """The trace id of a W3C ``traceparent`` (``00-<trace id>-<span id>-<flags>``)."""
    parent = headers.get(contract_headers.TRACEPARENT) or ""
    parts = parent.split("-")
    if len(parts) >= 3 and len(parts[1]) == 32:
        return parts[1]
    return None


def fold(text: str | None) -> str | None:
    """The form of a subject and of a search term that the subject search compares."""
    return None if text is None else text.casefold()


SENDER_SEPARATOR = "\n"  # between the two addresses of ``sender_search``; never in a term


def sender_fold(header_from: str | None, envelope_from: str | None) -> str | None:
    """The text the sender search compares: the From header's address and the envelope
    sender, each case-folded, joined by a line break (which no address holds, so a term
    matches within one of them, never across both); None when the mail has neither."""
    parts = [a.casefold() for a in (header_from, envelope_from) if a is not None]
    return SENDER_SEPARATOR.join(parts) if parts else None


def mail_key_of(msg: Incoming) -> str | None:
    return msg.headers.get(contract_headers.MAIL_KEY)


def utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    value = utc(value)
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def new_mail(mail_key: str, tenant: str, at: datetime) -> dict[str, Any]:
    return {
        "mail_key": mail_key, "tenant": tenant, "message_id": None, "source": None,
        "mailbox": None, "envelope_from": None, "header_from": None, "recipients": [],
        "subject": None, "subject_search": None, "sender_search": None, "received_at": at,
        "size": None, "raw": None, "status": "received",
        "label": None, "confidence": None, "scores": None, "model_version": None,
        "spam_score": None, "processor_id": None, "classified_at": None, "classify_ms": None,
        "corrected_label": None, "corrected_by": None, "trace_id": None,
        "processing_ms": None, "has_html": 0, "documents": 0, "transcripts": 0,
        "deliveries": 0, "updated_at": at, "last_sequence": 0,
    }


def _status(row: dict[str, Any], status: str) -> None:
    current = row["status"]
    if current == FAILED:
        return
    if status == FAILED or STATUS_RANK.get(status, -1) > STATUS_RANK.get(current, -1):
        row["status"] = status


def _apply_mail(row: dict[str, Any], event: Event, trace_id: str | None,
                batch: Batch, sequence: int) -> None:
    """The change ``event`` makes to its mail's row (and to the deliveries)."""
    if isinstance(event, MailReceived):
        row.update(message_id=event.message_id, source=event.source, mailbox=event.mailbox,
                   envelope_from=event.envelope_from, header_from=event.header_from,
                   recipients=list(event.recipients), subject=event.subject,
                   received_at=utc(event.occurred_at), size=event.size,
                   raw=event.raw.model_dump(mode="json"))
        if trace_id:
            row["trace_id"] = trace_id
        _status(row, "received")
    elif isinstance(event, MailParsed):
        row["message_id"] = row["message_id"] or event.message_id
        if row["subject"] is None:
            row["subject"] = event.subject
        if row["header_from"] is None:
            row["header_from"] = event.header_from
        if row["raw"] is None and event.raw is not None:
            row["raw"] = event.raw.model_dump(mode="json")
        row["has_html"] = 1 if event.has_html else 0
        _status(row, "parsed")
    elif isinstance(event, MailClassified):
        row.update(label=event.classification, confidence=event.confidence,
                   scores=dict(event.scores), model_version=event.model_version,
                   spam_score=event.spam_score, processor_id=event.processor_id,
                   classified_at=utc(event.processed_at), classify_ms=event.processing_time_ms)
        row["message_id"] = row["message_id"] or event.email_id
        received = utc(row["received_at"])
        done = utc(event.processed_at)
        if received is not None and done is not None:
            row["processing_ms"] = round(max(0.0, (done - received).total_seconds() * 1000), 3)
        _status(row, "classified")
    elif isinstance(event, DocumentStored):
        row["documents"] += 1
    elif isinstance(event, VoicemailTranscribed):
        row["transcripts"] += 1
    elif isinstance(event, MailFailed):
        _status(row, FAILED)
    elif isinstance(event, MailLabelCorrected):
        row["corrected_label"] = event.label
        row["corrected_by"] = event.corrected_by
    elif isinstance(event, DeliveryRequested):
        if event.delivery_id not in batch.deliveries:
            row["deliveries"] += 1
            batch.deliveries[event.delivery_id] = {
                "delivery_id": event.delivery_id, "mail_key": event.mail_key,
                "tenant": event.tenant, "kind": event.kind, "to": list(event.to),
                "status": "requested", "requested_at": utc(event.occurred_at),
                "finished_at": None, "relay": None, "error": None, "message_id": None,
                "sequence": sequence,
            }
            batch.new_deliveries.add(event.delivery_id)
    elif isinstance(event, DeliverySent | DeliveryFailed):
        delivery = batch.deliveries.get(event.delivery_id)
        if delivery is None:  # the request is older than the stream's retention
            row["deliveries"] += 1
            delivery = batch.deliveries[event.delivery_id] = {
                "delivery_id": event.delivery_id, "mail_key": event.mail_key,
                "tenant": event.tenant, "kind": event.kind, "to": list(event.to),
                "status": "requested", "requested_at": None, "finished_at": None,
                "relay": None, "error": None, "message_id": None, "sequence": sequence,
            }
            batch.new_deliveries.add(event.delivery_id)
        if isinstance(event, DeliverySent):
            delivery.update(status="sent", relay=event.relay, message_id=event.message_id,
                            error=None)
        else:
            delivery.update(status="failed", error=event.error)
        delivery["finished_at"] = utc(event.occurred_at)
        batch.dirty_deliveries.add(event.delivery_id)
    elif isinstance(event, ReplyDrafted | ReplyReviewed | ReplySkipped):
        _apply_reply(event, batch, sequence)
    # mail.authenticated and event types this release does not know: the timeline only (the
    # detail page reads them from there)


REVIEWABLE = ("pending", "held")


def new_reply(reply_id: str, event: Event, sequence: int) -> dict[str, Any]:
    return {
        "reply_id": reply_id, "mail_key": event.mail_key, "tenant": event.tenant,
        "mailbox": None, "status": "pending", "draft_status": None, "held_reasons": [],
        "to": [], "subject": None, "body_text": None, "draft_text": None, "language": None,
        "model": None, "backend": None, "sources": [], "drafted_at": None, "decision": None,
        "reviewed_by": None, "reviewed_at": None, "edited_text": None, "reason": None,
        "sequence": sequence,
    }


def _apply_reply(event: ReplyDrafted | ReplyReviewed | ReplySkipped, batch: Batch,
                 sequence: int) -> None:
    reply_id = event.reply_id or reply_id_for(event.tenant, event.mail_key)
    row = batch.replies.get(reply_id)
    if row is None:
        row = batch.replies[reply_id] = new_reply(reply_id, event, sequence)
        batch.new_replies.add(reply_id)
    if row["tenant"] != event.tenant:
        return  # another tenant's id: never mixed in
    reviewed = row["decision"] is not None
    if isinstance(event, ReplyDrafted):
        row.update(mailbox=event.mailbox, draft_status=event.status,
                   held_reasons=list(event.held_reasons), to=list(event.to),
                   subject=event.subject, body_text=event.body_text,
                   draft_text=event.draft_text, language=event.language, model=event.model,
                   backend=event.backend,
                   sources=[s.model_dump(mode="json") for s in event.sources],
                   drafted_at=utc(event.occurred_at))
        if not reviewed:
            row["status"] = event.status
    elif isinstance(event, ReplyReviewed):
        if not reviewed:  # the first decision on a reply is final
            row.update(status=event.decision, decision=event.decision,
                       reviewed_by=event.reviewed_by, reviewed_at=utc(event.occurred_at),
                       edited_text=event.body_text, reason=event.reason)
    else:
        if not reviewed and row["draft_status"] is None:
            row.update(status="skipped", reason=event.reason + (
                f": {event.detail}" if event.detail else ""))
    batch.dirty_replies.add(reply_id)


def _failure(batch: Batch, msg: Incoming, mail_key: str | None, error: str) -> None:
    batch.failures.append({"sequence": msg.sequence, "subject": msg.subject[:255],
                           "mail_key": mail_key, "error": error[:2000]})


def apply(batch: Batch, msg: Incoming) -> str | None:
    """Apply one message of the stream to the rows of ``batch``.

    Returns None when applied (or skipped as a repeat), else why it could not be: then it is
    recorded in ``batch.failures`` and the rows are left as they were (no retry loop: the
    next event is applied, the failure is listed for an operator)."""
    batch.last_sequence = max(batch.last_sequence, msg.sequence)
    event_type = event_type_of(msg.subject, msg.headers)
    header_key = mail_key_of(msg)
    try:
        payload = msg.payload()
    except ValueError as exc:
        error = f"undecodable payload: {exc}"
        _failure(batch, msg, header_key, error)
        return error
    event_id = str(payload.get("event_id") or msg.headers.get(contract_headers.MSG_ID) or "")
    if event_id and event_id in batch.seen_event_ids:
        return None  # the same event again (republished outside the duplicate window)
    mail_key = payload.get("mail_key") or header_key
    tenant = payload.get("tenant") or msg.subject.rsplit(".", 1)[-1]
    if not isinstance(mail_key, str) or not 0 < len(mail_key) <= 64 \
            or not isinstance(tenant, str) or not 0 < len(tenant) <= 63:
        error = "no mail_key (1-64 characters) or tenant (1-63)"
        _failure(batch, msg, header_key, error)
        return error
    cls = BY_TYPE.get(event_type)
    trace_id = trace_id_of(msg.headers)
    event: Event | None = None
    error: str | None = None
    if cls is not None:
        try:
            event = cls.model_validate(payload)
        except ValidationError as exc:
            error = f"invalid {event_type}: {exc.error_count()} error(s): " + "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
    occurred = utc(event.occurred_at) if event is not None else _parse_time(
        payload.get("occurred_at"))
    if occurred is None:
        occurred = datetime(1970, 1, 1, tzinfo=UTC)
    row_before = batch.mails.get(mail_key)
    # a shallow copy is enough: the rules replace nested values, never change them in place
    row = dict(row_before) if row_before is not None else new_mail(mail_key, tenant, occurred)
    if event is not None:
        try:
            _apply_mail(row, event, trace_id, batch, msg.sequence)
        except Exception as exc:  # a rule that cannot handle this payload: record, go on
            error = f"{type(exc).__name__}: {exc}"
    if error is not None:
        _failure(batch, msg, mail_key, error)
    if error is None and row["tenant"] == tenant:
        row["subject_search"] = fold(row["subject"])
        row["sender_search"] = sender_fold(row["header_from"], row["envelope_from"])
        row["last_sequence"] = msg.sequence
        row["updated_at"] = max(utc(row["updated_at"]) or occurred, occurred)
        batch.mails[mail_key] = row
        if row_before is None:
            batch.new_mails.add(mail_key)
        else:
            batch.dirty_mails.add(mail_key)
    timeline_row = {
        "sequence": msg.sequence, "mail_key": mail_key, "tenant": tenant,
        "event_type": event_type[:64], "event_id": event_id[:128] or f"seq-{msg.sequence}",
        "occurred_at": occurred, "payload": payload, "trace_id": trace_id,
    }
    batch.timeline.append(timeline_row)
    if event_id:
        batch.seen_event_ids.add(event_id)
    current = batch.mails.get(mail_key)
    batch.applied.append((timeline_row, dict(current) if current is not None else None))
    return error


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


# --- what the API shows ------------------------------------------------------------------------


def effective_label(row: dict[str, Any]) -> str | None:
    return row.get("corrected_label") or row.get("label")


def summary(row: dict[str, Any]) -> dict[str, Any]:
    """MailSummary (docs: /work/notes/console-api.md): one row of the mail list."""
    return {
        "mail_key": row["mail_key"], "tenant": row["tenant"], "message_id": row["message_id"],
        "source": row["source"], "mailbox": row["mailbox"],
        "from": row["header_from"] or row["envelope_from"],
        "to": list(row["recipients"] or []), "subject": row["subject"],
        "received_at": iso(row["received_at"]), "status": row["status"],
        "label": row["label"], "confidence": row["confidence"],
        "corrected_label": row["corrected_label"], "documents": row["documents"],
        "transcripts": row["transcripts"], "deliveries": row["deliveries"],
        "processing_ms": row["processing_ms"], "trace_id": row["trace_id"],
        "sequence": row["last_sequence"],
    }


def seed_result(row: dict[str, Any]) -> dict[str, Any]:
    """The seed's structured output of a classified mail (``GET /results/{email_id}``)."""
    return {
        "email_id": row["message_id"], "classification": row["label"],
        "confidence": row["confidence"], "processed_at": iso(row["classified_at"]),
        "processor_id": row["processor_id"], "processing_time_ms": row["classify_ms"],
    }


def feed_message(timeline_row: dict[str, Any], mail: dict[str, Any] | None) -> dict[str, Any]:
    """The WebSocket message of one applied event (the seed's ``email_event`` shape)."""
    data: dict[str, Any] = summary(mail) if mail is not None else {
        "mail_key": timeline_row["mail_key"], "tenant": timeline_row["tenant"]}
    payload = timeline_row["payload"]
    if timeline_row["event_type"] == MailClassified.event_type:
        data.update(email_id=payload.get("email_id"),
                    classification=payload.get("classification"),
                    confidence=payload.get("confidence"),
                    processed_at=payload.get("processed_at"))
    return {"type": "email_event", "event": timeline_row["event_type"],
            "sequence": timeline_row["sequence"], "data": data,
            "timestamp": iso(timeline_row["occurred_at"])}


def event_summary(event_type: str, payload: dict[str, Any]) -> str:
    """One line for the timeline."""
    p = payload
    if event_type == MailReceived.event_type:
        return f"received via {p.get('source', 'smtp')} for {p.get('mailbox', '?')}, " \
               f"{p.get('size', 0)} bytes"
    if event_type == MailAuthenticated.event_type:
        spf = (p.get("spf") or {}).get("result", "none")
        dkim = ",".join(d.get("result", "?") for d in p.get("dkim") or []) or "none"
        dmarc = (p.get("dmarc") or {}).get("result", "none")
        return f"spf={spf} dkim={dkim} dmarc={dmarc}"
    if event_type == DocumentStored.event_type:
        return f"document {p.get('filename')} ({p.get('sniffed_content_type') or p.get('declared_content_type')}, {p.get('size')} bytes)"  # noqa: E501
    if event_type == MailParsed.event_type:
        return f"parsed: {len(p.get('document_ids') or [])} document(s)"
    if event_type == MailClassified.event_type:
        return f"classified {p.get('classification')} ({p.get('confidence')})"
    if event_type == VoicemailTranscribed.event_type:
        return f"voicemail {p.get('status')} by {p.get('engine')}"
    if event_type == MailLabelCorrected.event_type:
        return f"label corrected to {p.get('label')} by {p.get('corrected_by')}"
    if event_type == DeliveryRequested.event_type:
        return f"{p.get('kind')} delivery requested to {len(p.get('to') or [])} recipient(s)"
    if event_type == DeliverySent.event_type:
        return f"{p.get('kind')} delivery sent via {p.get('relay')}"
    if event_type == DeliveryFailed.event_type:
        return f"{p.get('kind')} delivery failed: {p.get('error')}"
    if event_type == MailFailed.event_type:
        return f"failed at {p.get('stage')}: {p.get('error')}"
    if event_type == ReplyDrafted.event_type:
        held = "; ".join(p.get("held_reasons") or [])
        return f"reply drafted ({p.get('status')}{': ' + held if held else ''}) by " \
               f"{p.get('model')}"
    if event_type == ReplyReviewed.event_type:
        edited = ", edited" if p.get("body_text") else ""
        why = f": {p.get('reason')}" if p.get("reason") else ""
        return f"reply {p.get('decision')} by {p.get('reviewed_by')}{edited}{why}"
    if event_type == ReplySkipped.event_type:
        return f"no reply: {p.get('reason')}" + (f" ({p.get('detail')})" if p.get("detail")
                                                   else "")
    return event_type


# --- cursors -----------------------------------------------------------------------------------


def encode_cursor(*parts: Any) -> str:
    raw = json.dumps([p.isoformat() if isinstance(p, datetime) else p for p in parts])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[Any]:
    """Raises ValueError for anything that is not a cursor this API made."""
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        parts = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except Exception as exc:
        raise ValueError("invalid cursor") from exc
    if not isinstance(parts, list):
        raise ValueError("invalid cursor")
    return parts


def reply_json(row: dict[str, Any], *, full: bool = False) -> dict[str, Any]:
    """A reply as the API shows it (``full``: with its texts and sources)."""
    out = {
        "reply_id": row["reply_id"], "mail_key": row["mail_key"], "tenant": row["tenant"],
        "mailbox": row["mailbox"], "status": row["status"], "draft_status": row["draft_status"],
        "held_reasons": list(row["held_reasons"] or []), "to": list(row["to"] or []),
        "subject": row["subject"], "language": row["language"], "model": row["model"],
        "backend": row["backend"], "drafted_at": iso(row["drafted_at"]),
        "decision": row["decision"], "reviewed_by": row["reviewed_by"],
        "reviewed_at": iso(row["reviewed_at"]), "reason": row["reason"],
        "reviewable": row["status"] in REVIEWABLE, "sequence": row["sequence"],
    }
    if full:
        out.update(body_text=row["body_text"], draft_text=row["draft_text"],
                   edited_text=row["edited_text"], sources=list(row["sources"] or []))
    return out
