"""Generated artefacts of the catalogue: one JSON Schema per event version, one AsyncAPI document.

``python -m postroom_contracts generate`` writes them into libs/contracts/schemas/;
``python -m postroom_contracts check`` fails on drift or on an incompatible change made without
a version bump. Old versions' schema files stay committed: they are the compatibility baseline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def schema_path(event: type[Event], version: int | None = None) -> Path:
    return SCHEMA_DIR / event.event_type / f"v{version or event.schema_version}.json"


def event_schema(event: type[Event]) -> dict[str, Any]:
    schema = event.model_json_schema(mode="serialization")
    schema["$id"] = f"urn:postroom:event:{event.event_type}:v{event.schema_version}"
    schema["x-subject"] = f"{PREFIX}.{event.event_type}.{{tenant}}"
    schema["x-draft"] = event.draft
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


# --- compatibility ---------------------------------------------------------------------------


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref and ref.startswith("#/$defs/"):
        return root["$defs"][ref.removeprefix("#/$defs/")]
    return schema


def _types(schema: dict[str, Any], root: dict[str, Any]) -> set[str]:
    schema = _resolve(schema, root)
    if "anyOf" in schema:
        out: set[str] = set()
        for option in schema["anyOf"]:
            out |= _types(option, root)
        return out
    if "const" in schema:
        return {f"const:{schema['const']!r}"}
    if "enum" in schema:
        return {f"enum:{v!r}" for v in schema["enum"]}
    if "type" in schema:
        return {schema["type"]} if isinstance(schema["type"], str) else set(schema["type"])
    if "$ref" in schema:
        return {schema["$ref"]}
    return {"any"}


def incompatibilities(
    old: dict[str, Any], new: dict[str, Any], path: str = "", old_root: Any = None,
    new_root: Any = None,
) -> list[str]:
    """Why ``new`` is not backward compatible with ``old`` (empty when it is).

    Backward compatible means every payload valid under ``new`` is understood by a consumer
    written for ``old``, and every field ``old`` promised is still there with the same type:
    no property removed, no property retyped or narrowed, no new required property.
    """
    old_root = old_root or old
    new_root = new_root or new
    old = _resolve(old, old_root)
    new = _resolve(new, new_root)
    problems: list[str] = []
    old_props = old.get("properties", {})
    new_props = new.get("properties", {})
    for name, old_prop in old_props.items():
        where = f"{path}.{name}" if path else name
        if name not in new_props:
            problems.append(f"{where}: removed")
            continue
        new_prop = new_props[name]
        old_t, new_t = _types(old_prop, old_root), _types(new_prop, new_root)
        if old_t != new_t and not old_t <= new_t | {"any"}:
            problems.append(f"{where}: type changed {sorted(old_t)} -> {sorted(new_t)}")
        elif not old_t <= new_t:
            problems.append(f"{where}: type narrowed {sorted(old_t)} -> {sorted(new_t)}")
        o, n = _resolve(old_prop, old_root), _resolve(new_prop, new_root)
        if "properties" in o or "properties" in n:
            problems += incompatibilities(o, n, where, old_root, new_root)
    added_required = set(new.get("required", [])) - set(old.get("required", []))
    for name in sorted(added_required):
        where = f"{path}.{name}" if path else name
        problems.append(f"{where}: newly required")
    return problems


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def check() -> list[str]:
    """Everything wrong between the models and the committed artefacts."""
    problems: list[str] = []
    for event in CATALOGUE:
        path = schema_path(event)
        generated = event_schema(event)
        if not path.exists():
            problems.append(f"{event.event_type} v{event.schema_version}: no committed schema "
                            f"({path.relative_to(SCHEMA_DIR.parent)}); run generate")
            continue
        committed = json.loads(path.read_text())
        if committed == json.loads(_dump(generated)):
            continue
        breaking = incompatibilities(committed, generated)
        if breaking:
            problems.append(
                f"{event.event_type} v{event.schema_version}: incompatible change without a "
                f"version bump: {'; '.join(breaking)}"
            )
        else:
            problems.append(f"{event.event_type} v{event.schema_version}: schema drift; run "
                            "`python -m postroom_contracts generate`")
        # an older version must never be edited in place either
    for event in CATALOGUE:
        for version in range(1, event.schema_version):
            if not schema_path(event, version).exists():
                problems.append(f"{event.event_type} v{version}: old schema file missing")
    if not ASYNCAPI_FILE.exists() or json.loads(ASYNCAPI_FILE.read_text()) != json.loads(
        _dump(asyncapi_document())
    ):
        problems.append("asyncapi.json drift; run `python -m postroom_contracts generate`")
    return problems


def generate() -> list[Path]:
    """Write schemas; refuse to overwrite a committed version with an incompatible one."""
    written: list[Path] = []
    for event in CATALOGUE:
        path = schema_path(event)
        generated = event_schema(event)
        if path.exists():
            breaking = incompatibilities(json.loads(path.read_text()), generated)
            if breaking:
                raise SystemExit(
                    f"{event.event_type} v{event.schema_version}: incompatible change "
                    f"({'; '.join(breaking)}): bump schema_version instead"
                )
        path.parent.mkdir(parents=True, exist_ok=True)
        text = _dump(generated)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            written.append(path)
    text = _dump(asyncapi_document())
    if not ASYNCAPI_FILE.exists() or ASYNCAPI_FILE.read_text() != text:
        ASYNCAPI_FILE.write_text(text)
        written.append(ASYNCAPI_FILE)
    return written
