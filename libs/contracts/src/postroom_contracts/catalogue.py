"""Generated artefacts of the catalogue: one JSON Schema per event version, one AsyncAPI document.

``python -m postroom_contracts generate`` writes them into libs/contracts/schemas/;
``python -m postroom_contracts check`` fails on drift, on an incompatible change (in place or in
a new revision: every revision of an event type must be compatible with every earlier one, by
the rules of :mod:`postroom_contracts.compatibility`) and on a ``version`` field pinned to one
revision. Earlier revisions' schema files stay committed: they are the compatibility baseline.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .compatibility import incompatibilities
from .events import BY_TYPE, CATALOGUE, DeadLetter, Event
from .headers import EVENT_TYPE, HEADERS, REQUIRED, SCHEMA_VERSION
from .services import (
    ServiceRegistryError,
    ServiceSpec,
    consumers,
    producers,
    projectors,
    registered,
)
from .subjects import DEAD_LETTERS, DLQ_PREFIX, EVENTS, PREFIX, dlq_subject, subject_filter

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
ASYNCAPI_FILE = SCHEMA_DIR / "asyncapi.json"


def schema_path(
    event: type[Event], version: int | None = None, schema_dir: Path | None = None
) -> Path:
    """The schema file of one revision of ``event`` (default: its current one)."""
    revision = version or event.schema_version
    return (schema_dir or SCHEMA_DIR) / event.event_type / f"v{revision}.json"


def event_schema(event: type[Event]) -> dict[str, Any]:
    schema = event.model_json_schema(mode="serialization")
    schema["$id"] = f"urn:postroom:event:{event.event_type}:v{event.schema_version}"
    schema["x-subject"] = f"{PREFIX}.{event.event_type}.{{tenant}}"
    schema["x-draft"] = event.draft
    if event.deprecated:
        schema["deprecated"] = True
        schema["x-deprecated"] = event.deprecated
    return schema


def message_headers(event: type[Event]) -> dict[str, Any]:
    """JSON Schema of the NATS headers every ``event`` is published with."""
    properties: dict[str, Any] = {
        name: {"type": "string", "description": description}
        for name, description in HEADERS.items()
    }
    properties[EVENT_TYPE]["const"] = event.event_type
    # a reader of revision N accepts any revision: later ones are compatible (tolerant reader)
    properties[SCHEMA_VERSION]["pattern"] = "^[1-9][0-9]*$"
    return {"type": "object", "properties": properties, "required": list(REQUIRED)}


def _send_operation_id(service: str, event: type[Event]) -> str:
    return f"{service}-publish-{event.event_type.replace('.', '-')}"


def asyncapi_document(services: Iterable[ServiceSpec] | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document: every event's channel and message (payload and headers), a
    ``send`` operation per service that publishes it and a ``receive`` operation per durable
    consumer (named after it). ``services``: the registered ones (entry points) by default."""
    specs = registered() if services is None else tuple(services)
    by_service = {spec.name: spec for spec in specs}
    senders = producers(specs)
    receivers = consumers(specs)
    readers = projectors(specs)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}

    def add_operation(key: str, operation: dict[str, Any]) -> None:
        if key in operations:
            raise ServiceRegistryError(f"AsyncAPI operation {key!r} would be defined twice")
        operations[key] = operation

    for event in CATALOGUE:
        name = event.event_type.replace(".", "_")
        msg_name = f"{name}_v{event.schema_version}"
        published_by = senders.get(event.event_type, [])
        consumed_by = receivers.get(event.event_type, [])
        messages[msg_name] = {
            "name": event.__name__,
            "title": f"{event.event_type} v{event.schema_version}"
            + (" (draft)" if event.draft else ""),
            "summary": (event.__doc__ or "").strip().splitlines()[0],
            "contentType": "application/json",
            "headers": message_headers(event),
            "payload": event_schema(event),
        }
        who = [f"Published by {', '.join(published_by)}." if published_by else
               "Draft: no service publishes it yet; it may still change before one does."
               if event.draft else "No registered service publishes it."]
        if consumed_by:
            who.append("Consumed by " + ", ".join(
                f"{service} (durable consumer {consumer.durable})"
                for service, consumer in consumed_by) + ".")
        if readers:
            who.append("Read by " + ", ".join(readers) + " (projection of every event).")
        channels[name] = {
            "address": f"{PREFIX}.{event.event_type}.{{tenant}}",
            "title": event.event_type + (" (draft)" if event.draft else ""),
            "description": f"Stream {EVENTS.name}; one subject per tenant. " + " ".join(who),
            "parameters": {"tenant": {"description": "Tenant slug (kebab-case)"}},
            "messages": {msg_name: {"$ref": f"#/components/messages/{msg_name}"}},
        }
        channel_ref = {"$ref": f"#/channels/{name}"}
        message_refs = [{"$ref": f"#/channels/{name}/messages/{msg_name}"}]
        for service in published_by:
            add_operation(_send_operation_id(service, event), {
                "action": "send",
                "channel": channel_ref,
                "title": f"{service} publishes {event.event_type}",
                "tags": [{"name": service}],
                "messages": message_refs,
            })
        for service, consumer in consumed_by:
            add_operation(consumer.durable, {
                "action": "receive",
                "channel": channel_ref,
                "title": f"{service} consumes {event.event_type}",
                "summary": consumer.summary or by_service[service].summary,
                "description": (
                    f"Durable pull consumer `{consumer.durable}` on stream {EVENTS.name}, "
                    f"subject filter `{subject_filter(event.event_type)}` (every tenant). "
                    "It is also the idempotency scope; what it gives up on goes to "
                    f"`{dlq_subject(consumer.durable)}`."
                ),
                "tags": [{"name": service}],
                "messages": message_refs,
                "x-durable-consumer": consumer.durable,
            })
        for service in readers:
            add_operation(f"{service}_projects_{name}", {
                "action": "receive",
                "channel": channel_ref,
                "title": f"{service} reads {event.event_type}",
                "summary": by_service[service].summary,
                "description": (
                    f"Ordered consumer on stream {EVENTS.name} (every event type, every "
                    f"tenant) from the position {service} keeps in its own store; no durable "
                    "consumer on the server, no dead letters."
                ),
                "tags": [{"name": service}],
                "messages": message_refs,
            })
    messages["dead_letter"] = {
        "name": "DeadLetter",
        "contentType": "application/json",
        "payload": DeadLetter.model_json_schema(mode="serialization"),
    }
    channels["dead_letters"] = {
        "address": f"{DLQ_PREFIX}.{{consumer}}",
        "description": f"Stream {DEAD_LETTERS.name}; list and replay with `postroom dlq`.",
        "parameters": {"consumer": {"description": "Durable consumer name"}},
        "messages": {"dead_letter": {"$ref": "#/components/messages/dead_letter"}},
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Postroom event catalogue",
            "version": "1.0.0",
            "description": "Events Postroom publishes on NATS JetStream. A public API: "
            "revisions of an event type (`version`, header Postroom-Schema-Version) are "
            "compatible with each other and readers accept newer ones; a breaking change is a "
            "new event type `<type>.v2` on its own subject, published side by side with the "
            "old one until its consumers have moved. "
            "Operations are grouped by service (tags): `send` per publishing service, "
            "`receive` per durable consumer.",
            "tags": [{"name": spec.name, "description": spec.summary} for spec in specs],
        },
        "defaultContentType": "application/json",
        "servers": {
            "embedded": {"host": "127.0.0.1:4222", "protocol": "nats"},
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def service_problems(services: Iterable[ServiceSpec] | None = None) -> list[str]:
    """What is wrong between the registered services and the catalogue: a released event
    nobody publishes, a consumer of an event nobody publishes, an event outside the
    catalogue, a draft that a service already publishes."""
    try:
        specs = registered() if services is None else tuple(services)
    except ServiceRegistryError as exc:
        return [f"service registry: {exc}"]
    problems: list[str] = []
    senders = producers(specs)
    for spec in specs:
        events = [*spec.publishes, *(c.event for c in spec.consumes)]
        for event in events:
            if BY_TYPE.get(event.event_type) is not event:
                problems.append(f"{spec.name}: {event.__name__} ({event.event_type}) is not an "
                                "event of the catalogue (events.CATALOGUE)")
        for consumer in spec.consumes:
            if consumer.event.event_type not in senders:
                problems.append(f"{spec.name}: consumes {consumer.event.event_type}, which no "
                                "registered service publishes")
    for event in CATALOGUE:
        if event.draft and event.event_type in senders:
            problems.append(
                f"{event.event_type}: published by {', '.join(senders[event.event_type])} but "
                "still marked draft; a shipped event is no longer a draft (draft = False)")
        if not event.draft and event.event_type not in senders:
            problems.append(
                f"{event.event_type}: no registered service publishes it: list it in the "
                "`publishes` of its producer's spec (services/<name>/src/postroom_<name>/spec.py)"
                ", or mark it draft; services are found through the `postroom.services` entry "
                "points (`uv sync --all-packages`)")
    return problems


# --- revisions and their compatibility (the rules: compatibility.py) -------------------------

BREAKING_HINT = (
    "A breaking change is a new major event type on its own subject (e.g. '<type>.v2'), "
    "published side by side with this one until its consumers moved (docs/architecture.md, "
    "'Versions and compatibility')"
)


def pinned_version(event: type[Event]) -> str | None:
    """Why a reader built on ``event`` would refuse a later revision (None: it accepts them)."""
    field = event.model_fields.get("version")
    if field is None:
        return "no `version` field"
    if field.annotation is not int:
        return (f"`version` is declared as {field.annotation!r}: a consumer built on it refuses "
                "every later revision; remove the declaration (Event declares `version: int`, "
                "defaulting to schema_version)")
    if field.default != event.schema_version:
        return f"`version` defaults to {field.default}, not to schema_version"
    return None


def _breaking(event: type[Event], generated: dict[str, Any], schema_dir: Path | None,
              ) -> list[str]:
    """Why ``generated`` is incompatible with any committed revision of ``event`` (a revision
    committed as a draft is no baseline: no service published it)."""
    out: list[str] = []
    for revision in range(1, event.schema_version + 1):
        path = schema_path(event, revision, schema_dir)
        if not path.exists():
            continue
        committed = json.loads(path.read_text())
        if committed.get("x-draft"):
            continue  # nobody publishes a draft yet: it may change until it ships
        out += [f"against v{revision}: {reason}" for reason in
                incompatibilities(committed, generated)]
    return out


def schema_problems(
    events: Iterable[type[Event]] = CATALOGUE, schema_dir: Path | None = None
) -> list[str]:
    """What is wrong between ``events`` and their committed schema files."""
    root = schema_dir or SCHEMA_DIR
    problems: list[str] = []
    for event in events:
        name = f"{event.event_type} v{event.schema_version}"
        if (pinned := pinned_version(event)) is not None:
            problems.append(f"{name}: {pinned}")
        generated = event_schema(event)
        if breaking := _breaking(event, generated, schema_dir):
            problems.append(f"{name}: incompatible change: {'; '.join(breaking)}. "
                            f"{BREAKING_HINT}")
        for revision in range(1, event.schema_version):
            path = schema_path(event, revision, schema_dir)
            if not path.exists():
                problems.append(f"{event.event_type} v{revision}: schema file of an earlier "
                                f"revision missing ({path.relative_to(root.parent)}); it is the "
                                "baseline later revisions are checked against")
        for later in sorted((root / event.event_type).glob("v*.json")):
            number = later.stem.removeprefix("v")
            if number.isdigit() and int(number) > event.schema_version:
                problems.append(f"{name}: {later.relative_to(root.parent)} is committed: a "
                                "revision number never goes back")
        path = schema_path(event, event.schema_version, schema_dir)
        if not path.exists():
            problems.append(f"{name}: no committed schema ({path.relative_to(root.parent)}); "
                            "run `python -m postroom_contracts generate`")
        elif json.loads(path.read_text()) != json.loads(_dump(generated)) and not breaking:
            problems.append(f"{name}: schema drift; run `python -m postroom_contracts generate`")
    return problems


def write_schemas(
    events: Iterable[type[Event]] = CATALOGUE, schema_dir: Path | None = None
) -> list[Path]:
    """Write each event's current revision; refuse (SystemExit) an incompatible one."""
    written: list[Path] = []
    for event in events:
        name = f"{event.event_type} v{event.schema_version}"
        if (pinned := pinned_version(event)) is not None:
            raise SystemExit(f"{name}: {pinned}")
        generated = event_schema(event)
        if breaking := _breaking(event, generated, schema_dir):
            raise SystemExit(f"{name}: incompatible change ({'; '.join(breaking)}). "
                             f"{BREAKING_HINT}")
        path = schema_path(event, event.schema_version, schema_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = _dump(generated)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            written.append(path)
    return written


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def check() -> list[str]:
    """Everything wrong between the models and the committed artefacts."""
    problems = schema_problems()
    if not ASYNCAPI_FILE.exists() or json.loads(ASYNCAPI_FILE.read_text()) != json.loads(
        _dump(asyncapi_document())
    ):
        problems.append("asyncapi.json drift; run `python -m postroom_contracts generate`")
    return problems


def generate() -> list[Path]:
    """Write schemas; refuse a revision incompatible with a committed one."""
    written = write_schemas()
    text = _dump(asyncapi_document())
    if not ASYNCAPI_FILE.exists() or ASYNCAPI_FILE.read_text() != text:
        ASYNCAPI_FILE.write_text(text)
        written.append(ASYNCAPI_FILE)
    return written
