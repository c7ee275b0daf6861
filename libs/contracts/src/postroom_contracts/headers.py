"""NATS headers on every event: part of the public API, next to the payload.

The runtime sets them on every publish (``postroom_runtime.jetstream.event_headers`` calls
:func:`event_headers`); the AsyncAPI document describes them from :data:`HEADERS`, so the two
cannot drift apart. ``traceparent`` is set by FastStream's OpenTelemetry middleware.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .events import Event

MSG_ID = "Nats-Msg-Id"
TRACEPARENT = "traceparent"
EVENT_TYPE = "Postroom-Event-Type"
SCHEMA_VERSION = "Postroom-Schema-Version"
MAIL_KEY = "Postroom-Mail-Key"

HEADERS: dict[str, str] = {
    MSG_ID: "De-duplication id: the event's event_id, so JetStream drops a re-publish inside "
    "its duplicate window (120 s). A replay from the dead letters carries "
    "replay:<sequence>:<original id>. Outside the window the same event can arrive again: "
    "de-duplicate on event_id.",
    TRACEPARENT: "W3C trace context: one trace per mail, from SMTP DATA to the last "
    "service's action.",
    EVENT_TYPE: "The event type, e.g. mail.received: route or filter without decoding the "
    "payload.",
    SCHEMA_VERSION: "The revision of the payload (its `version` field). Revisions of one "
    "event type are compatible: a reader accepts a higher one than it knows.",
    MAIL_KEY: "The mail's key (the payload's mail_key): every event about one mail carries "
    "the same key, so a subscriber can group or partition by mail without decoding.",
}
"""Every header a Postroom event carries, with what a subscriber may rely on."""

REQUIRED: tuple[str, ...] = (MSG_ID, EVENT_TYPE, SCHEMA_VERSION, MAIL_KEY)
"""Set on every publish by the runtime. ``traceparent`` is present on whatever a Postroom service
publishes, but a subscriber must not require it (tools and other publishers may omit it)."""


def event_headers(event: Event) -> dict[str, str]:
    """The headers the runtime publishes ``event`` with (without ``traceparent``)."""
    return {
        MSG_ID: event.event_id,
        EVENT_TYPE: event.event_type,
        SCHEMA_VERSION: str(event.version),
        MAIL_KEY: event.mail_key,
    }
