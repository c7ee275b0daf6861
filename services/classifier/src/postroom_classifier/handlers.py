"""Pure rules of the classifier: the model's input from a mail.parsed event (and the raw
mail's header block), and the id of what we publish. No I/O here."""

from __future__ import annotations

from email.message import Message

from postroom_classify.features import (
    MAX_BODY,
    MailFeatures,
    dmarc_verdict,
    headers_of_interest,
)
from postroom_contracts import MailParsed, derive_event_id


def features(event: MailParsed, headers: Message | None = None) -> MailFeatures:
    """What the model sees: mail.parsed's subject, body and document types; the headers of
    interest and the DMARC verdict from the raw mail's header block when it was read."""
    return MailFeatures(
        subject=event.subject or "",
        body=(event.body_text or "")[:MAX_BODY],
        headers=headers_of_interest(headers) if headers is not None else {},
        attachments=[(d.content_type or "application/octet-stream").lower()
                     for d in event.documents],
        dmarc=dmarc_verdict(headers) if headers is not None else "none",
        routed=event.route is not None,
    )


def classification_id(event: MailParsed) -> str:
    return derive_event_id(event.event_id, "mail.classified")
