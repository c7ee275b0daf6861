"""JetStream provisioning and publishing with de-duplication ids."""

from __future__ import annotations

import logging
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from postroom_contracts import STREAMS, Event, StreamSpec
from postroom_contracts import headers as contract_headers

log = logging.getLogger(__name__)

MSG_ID = contract_headers.MSG_ID


def stream_config(spec: StreamSpec, replicas: int, duplicate_window: float) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        description=spec.description,
        subjects=list(spec.subjects),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=float(spec.max_age_seconds),
        num_replicas=replicas,
        duplicate_window=float(duplicate_window),
        allow_direct=True,
    )


async def provision_streams(
    js: JetStreamContext, replicas: int = 1, duplicate_window: float = 120
) -> None:
    """Create or update every stream of the catalogue; safe to run from every service."""
    for spec in STREAMS:
        config = stream_config(spec, replicas, duplicate_window)
        try:
            await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(config)
            log.info("stream created", extra={"stream": spec.name})
        else:
            await js.update_stream(config)


def event_headers(event: Event, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Headers for an event, as the catalogue documents them (``postroom_contracts.headers``):
    the dedup id is the (derived) event id."""
    headers = contract_headers.event_headers(event)
    if extra:
        headers.update(extra)
    return headers


def encode(event: Event) -> bytes:
    return event.model_dump_json().encode()


async def publish_event(
    broker: Any, event: Event, *, stream: str, ack_timeout: float = 5.0
) -> Any:
    """Publish through the FastStream broker (traced) and wait for JetStream's ack."""
    return await broker.publish(
        encode(event),
        subject=event.nats_subject,
        headers=event_headers(event),
        stream=stream,
        timeout=ack_timeout,
    )
