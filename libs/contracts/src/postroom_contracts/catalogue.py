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
from .events import CATALOGUE, DeadLetter, Event
from .subjects import DEAD_LETTERS, DLQ_PREFIX, EVENTS, PREFIX

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
ASYNCAPI_FILE = SCHEMA_DIR / "asyncapi.json"

PRODUCERS: dict[str, str] = {
    "mail.received": "smtp-ingress",
    "document.stored": "attachment-extractor",
    "mail.parsed": "attachment-extractor",
    "mail.failed": "attachment-extractor",
    "voicemail.transcribed": "transcriber",
    "mail.classified": "classifier",
    "reply.drafted": "ai-responder",
    "delivery.requested": "ai-responder",
    "delivery.sent": "mailer",
    "delivery.failed": "mailer",
}


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


def asyncapi_document() -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for event in CATALOGUE:
        name = event.event_type.replace(".", "_")
        msg_name = f"{name}_v{event.schema_version}"
        messages[msg_name] = {
            "name": event.__name__,
            "title": f"{event.event_type} v{event.schema_version}"
            + (" (draft)" if event.draft else ""),
            "summary": (event.__doc__ or "").strip().splitlines()[0],
            "contentType": "application/json",
            "headers": {
                "type": "object",
                "properties": {
                    "Nats-Msg-Id": {"type": "string", "description": "De-duplication id"},
                    "traceparent": {"type": "string", "description": "W3C trace context"},
                },
            },
            "payload": event_schema(event),
        }
        channels[name] = {
            "address": f"{PREFIX}.{event.event_type}.{{tenant}}",
            "description": f"Stream {EVENTS.name}; one subject per tenant.",
            "parameters": {"tenant": {"description": "Tenant slug (kebab-case)"}},
            "messages": {msg_name: {"$ref": f"#/components/messages/{msg_name}"}},
        }
        operations[f"publish_{name}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{name}"},
            "summary": f"Published by {PRODUCERS.get(event.event_type, 'postroom')}",
            "messages": [{"$ref": f"#/channels/{name}/messages/{msg_name}"}],
        }
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
            "compatible changes keep an event's version, incompatible ones bump it.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "embedded": {"host": "127.0.0.1:4222", "protocol": "nats"},
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


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
    """Why ``generated`` is incompatible with any committed revision of ``event``."""
    out: list[str] = []
    for revision in range(1, event.schema_version + 1):
        path = schema_path(event, revision, schema_dir)
        if path.exists():
            out += [f"against v{revision}: {reason}" for reason in
                    incompatibilities(json.loads(path.read_text()), generated)]
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
