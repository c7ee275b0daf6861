"""Subjects and stream definitions: the public addresses of Postroom's events.

Every event is published on ``postroom.<event type>.<tenant>``, e.g.
``postroom.document.stored.acme``; subscribe to ``postroom.document.stored.*`` for all
tenants or to one tenant's subject only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PREFIX = "postroom"

EVENTS_STREAM = "POSTROOM_EVENTS"
DLQ_STREAM = "POSTROOM_DLQ"
DLQ_PREFIX = f"{PREFIX}.dlq"

TENANTS_BUCKET = "postroom-tenants"
BLOBS_BUCKET = "postroom-blobs"


def subject_for(event_type: str, tenant: str) -> str:
    return f"{PREFIX}.{event_type}.{tenant}"


def subject_filter(event_type: str) -> str:
    """Subject filter matching one event type for every tenant."""
    return f"{PREFIX}.{event_type}.*"


def dlq_subject(consumer: str) -> str:
    return f"{DLQ_PREFIX}.{consumer}"


@dataclass(frozen=True)
class StreamSpec:
    """What a stream must look like; the runtime provisions it idempotently."""

    name: str
    subjects: tuple[str, ...]
    description: str
    max_age_seconds: int
    duplicate_window_seconds: int = 120
    extra: dict[str, object] = field(default_factory=dict)


EVENTS = StreamSpec(
    name=EVENTS_STREAM,
    subjects=(
        f"{PREFIX}.mail.>",
        f"{PREFIX}.document.>",
        f"{PREFIX}.voicemail.>",
        f"{PREFIX}.reply.>",
        f"{PREFIX}.delivery.>",
    ),
    description="Postroom domain events (the public event catalogue)",
    max_age_seconds=14 * 24 * 3600,
)

DEAD_LETTERS = StreamSpec(
    name=DLQ_STREAM,
    subjects=(f"{DLQ_PREFIX}.>",),
    description="Messages a consumer gave up on, kept for listing and replay",
    max_age_seconds=30 * 24 * 3600,
)

STREAMS: tuple[StreamSpec, ...] = (EVENTS, DEAD_LETTERS)
