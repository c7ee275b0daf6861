"""Identifiers shared by every service: mail keys, event ids, message-id rules.

Ids are *derived*, never random, wherever an event can be produced more than once (a
redelivered message, a retried SMTP transaction): the same cause always yields the same id,
so JetStream's `Nats-Msg-Id` de-duplication and each consumer's idempotency table can
recognise the repeat.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid

# Namespace for uuid5-derived event ids (fixed forever: changing it changes every id).
EVENT_NAMESPACE = uuid.UUID("6f0b7a52-4f0e-4d7a-9d0e-2f7d3c1a9b11")

TENANT_SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
_TENANT_RE = re.compile(TENANT_SLUG_PATTERN)


def is_tenant_slug(value: str) -> bool:
    """A slug is lower-case kebab-case and a valid NATS subject token (no dots, no wildcards)."""
    return bool(_TENANT_RE.match(value))


def mail_key(tenant: str, message_id: str, content_sha256: str | None = None) -> str:
    """The key of one mail for one tenant: stable across retries of the same mail.

    smtp-ingress passes ``content_sha256``, the SHA-256 of the message as the client sent it:
    a mail that reuses a Message-ID with other content is another mail with its own key, and
    the key is known before anything is stored, so two such mails arriving at once (or one
    retried after a 451) never share a key or an event id. Without it (mails accepted before
    content-aware keys) the key is derived from tenant and Message-ID alone.
    """
    text = f"{tenant}\n{message_id.strip()}"
    if content_sha256 is not None:
        text += f"\n{content_sha256}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def derive_event_id(cause: str, event_type: str, part: str = "") -> str:
    """Event id derived from what caused it (an event id, or a mail key for the first event)."""
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{cause}/{event_type}/{part}"))


def reply_id_for(tenant: str, mail_key: str) -> str:
    """The id of the AI reply to a mail (one per mail): ``r`` and 31 hex digits of SHA-256."""
    return "r" + hashlib.sha256(f"reply\n{tenant}\n{mail_key}".encode()).hexdigest()[:31]


def synthetic_message_id(
    from_addr: str, to_addr: str, subject: str, date: str, body_sha256: str = ""
) -> str:
    """Message-ID for a mail that has none: SHA-256 of a JSON array of From, To, Subject,
    Date and the SHA-256 of the body.

    Same inputs give the same id, so a retried mail without a Message-ID is still recognised
    as a duplicate. The JSON encoding keeps the fields apart (``"ab" + "c"`` and ``"a" + "bc"``
    are different arrays) and the body hash tells apart mails whose headers agree.
    """
    fields = json.dumps([from_addr, to_addr, subject, date, body_sha256])
    digest = hashlib.sha256(fields.encode()).hexdigest()
    return f"<synthetic-{digest[:32]}@postroom.generated>"
