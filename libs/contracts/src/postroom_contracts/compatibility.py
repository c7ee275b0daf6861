"""The compatibility rules between two revisions of one event type, as a schema comparison.

Postroom promises *full transitive* compatibility within an event type (Confluent Schema
Registry's FULL_TRANSITIVE, Avro's reader/writer resolution in both directions):

- forward: a consumer built for revision N reads every payload of a later revision M (the
  fields it does not know are ignored);
- backward: a consumer built for revision M reads every payload of an earlier revision N: the
  stream keeps events for 14 days, the dead letters for 30, a replay or a new consumer starts
  from the beginning, and during a rolling deploy old producers keep publishing next to new
  consumers.

So a field both revisions know must accept exactly the same values in both (a wider type
surprises old consumers; a narrower one makes new consumers refuse old payloads), and a field
only the newer revision knows must be optional with a default. The rules, path by path
(``a.b`` a nested field, ``a[]`` an array's items, ``a{}`` a dict's values):

- a field is never removed (a consumer of the old revision relies on it);
- a new field is optional, with a default that its own schema accepts; a field is never newly
  required;
- a field that becomes optional keeps accepting what it did, and its default is a value the
  old revision accepts; an optional field's default never changes (readers of different
  revisions would fill in different values for the same old payload);
- types are neither widened (``str`` -> ``str | None``, ``int`` -> ``float``) nor narrowed
  (``str | None`` -> ``str``), nor changed; array items and dict values recursively likewise;
- an enum (``Literal``) or ``const`` gains no value (a consumer switching over the values meets
  one it does not know) and loses none (earlier payloads carry it);
- value constraints (``minLength``, ``maxLength``, ``pattern``, ``format``, ``minimum``,
  ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum``, ``multipleOf``, ``minItems``,
  ``maxItems``, ``uniqueItems``, ``minProperties``, ``maxProperties``) are neither added,
  removed nor changed;
- a closed object (``additionalProperties: false``) gains no field;
- unions (``anyOf``/``oneOf``) gain and lose no alternative; alternatives are paired by JSON
  type, models in a tagged union by their tag (a ``Literal`` field with one value, e.g.
  ``kind``), and compared by these rules; a union of two models without a tag stays exactly
  as it is;
- annotations (``title``, ``description``, ``examples``, ``deprecated``, ``x-*``) change
  freely.

Top-level ``version`` is the revision number itself: it must stay an integer, its value
(default, pin) is not compared. What a consumer reads is the schema with every ``$ref``
resolved, so a change inside a shared model (``$defs``) counts for every field that uses it.
"""

from __future__ import annotations

import json
import re
from typing import Any

ANNOTATIONS = frozenset({
    "title", "description", "examples", "$comment", "deprecated", "readOnly", "writeOnly",
    "$id", "$schema", "default", "discriminator",
})
"""Keywords that do not restrict values (``default`` is compared on its own terms; a
``discriminator`` only repeats the tags of a union's alternatives, which are compared)."""

CONSTRAINTS: dict[str, tuple[str, ...]] = {
    "string": ("minLength", "maxLength", "pattern", "format", "contentEncoding",
               "contentMediaType"),
    "integer": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"),
    "number": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"),
    "array": ("minItems", "maxItems", "uniqueItems", "prefixItems", "contains"),
    "object": ("minProperties", "maxProperties", "patternProperties", "propertyNames"),
}

_MISSING: Any = object()
_REF = "$$ref"  # set by resolve(): the model a resolved schema came from


def incompatibilities(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why an event whose schema was ``old`` cannot become ``new`` in place (empty: it can).

    Both are whole event schemas (their own ``$defs``); each reason starts with the path of
    the field and says who would break."""
    return _Comparison(old, new).event()


class _Comparison:
    def __init__(self, old_root: dict[str, Any], new_root: dict[str, Any]) -> None:
        self.old_root = old_root
        self.new_root = new_root
        self.problems: list[str] = []
        self._active: set[tuple[str, str]] = set()  # pairs of models being compared

    def report(self, where: str, reason: str) -> None:
        self.problems.append(f"{where or '(event)'}: {reason}")

    def event(self) -> list[str]:
        old = resolve(self.old_root, self.old_root)
        new = resolve(self.new_root, self.new_root)
        if "version" in old.get("properties", {}):
            version = new.get("properties", {}).get("version")
            if version is None:
                self.report("version", "removed (it is the revision number every reader reads)")
            elif {kind for kind, _ in options(version, self.new_root)} != {"integer"}:
                self.report("version", "is not an integer any more")
        self.compare_object(old, new, "", top=True)
        return self.problems

    # --- one schema against the other ----------------------------------------------------

    def compare(self, old: dict[str, Any], new: dict[str, Any], where: str) -> None:
        old_options = options(old, self.old_root)
        new_options = options(new, self.new_root)
        keyed = _pair(old_options, new_options, self.old_root, self.new_root)
        if keyed is None:
            # two alternatives of one JSON type without a tag to tell them apart: keep it as is
            if canonical(old, self.old_root) != canonical(new, self.new_root):
                self.report(where, "union of alternatives of the same JSON type changed (only "
                            "a tagged union's alternatives can evolve)")
            return
        old_by_key, new_by_key = keyed
        old_keys, new_keys = list(old_by_key), list(new_by_key)
        added = [k for k in new_keys if k not in old_by_key]
        removed = [k for k in old_keys if k not in new_by_key]
        if "any" in old_by_key and "any" not in new_by_key:
            self.report(where, f"narrowed: was any value, now only {_kinds(new_keys)} (a "
                        "reader of the new revision refuses earlier payloads)")
            return
        if "any" in new_by_key and "any" not in old_by_key:
            self.report(where, f"widened: was {_kinds(old_keys)}, now any value (a consumer "
                        "of the old revision meets values it refuses)")
            return
        if added and removed and not set(old_keys) & set(new_keys):
            self.report(where, f"type changed {_kinds(old_keys)} -> {_kinds(new_keys)}")
            return
        if added:
            self.report(where, f"widened: now also accepts {_kinds(added)} (a consumer of the "
                        "old revision meets values it refuses)")
        if removed:
            self.report(where, f"narrowed: no longer accepts {_kinds(removed)} (a reader of "
                        "the new revision refuses earlier payloads)")
        for key, old_option in old_by_key.items():
            if key in new_by_key:
                kind = key.split(" ", 1)[0]
                self.compare_option(kind, old_option, new_by_key[key], where)

    def compare_option(
        self, kind: str, old: dict[str, Any], new: dict[str, Any], where: str
    ) -> None:
        models = (old.get(_REF, ""), new.get(_REF, ""))
        if models[0] and models[1]:
            if models in self._active:  # a recursive model, already being compared above
                return
            self._active.add(models)
        try:
            self._compare_option(kind, old, new, where)
        finally:
            self._active.discard(models)

    def _compare_option(
        self, kind: str, old: dict[str, Any], new: dict[str, Any], where: str
    ) -> None:
        old_values, new_values = _values(old), _values(new)
        if old_values is None and new_values is not None:
            self.report(where, f"narrowed: now only the values {_show(new_values)} (a reader of "
                        "the new revision refuses earlier payloads)")
        elif old_values is not None and new_values is None:
            self.report(where, f"widened: no longer only the values {_show(old_values)} (a "
                        "consumer of the old revision meets values it does not know)")
        elif old_values is not None and new_values is not None:
            if gained := [v for v in new_values if v not in old_values]:
                self.report(where, f"new enum value {_show(gained)} (a consumer of the old "
                            "revision switching over the values meets one it does not know)")
            if lost := [v for v in old_values if v not in new_values]:
                self.report(where, f"enum value removed {_show(lost)} (earlier payloads carry "
                            "it; a reader of the new revision refuses them)")
        for key in CONSTRAINTS.get(kind, ()):
            self.compare_constraint(key, old.get(key, _MISSING), new.get(key, _MISSING), where)
        if kind == "array":
            self.compare(old.get("items", {}), new.get("items", {}), f"{where}[]")
        elif kind == "object":
            self.compare_object(old, new, where)

    def compare_constraint(self, key: str, old: Any, new: Any, where: str) -> None:
        if old == new:
            return
        if old is _MISSING:
            self.report(where, f"new constraint {key}={_show(new)} (a reader of the new "
                        "revision refuses earlier payloads that break it)")
        elif new is _MISSING:
            self.report(where, f"constraint {key}={_show(old)} removed (a consumer of the old "
                        "revision meets values it refuses)")
        else:
            self.report(where, f"constraint {key} changed {_show(old)} -> {_show(new)} (one "
                        "side refuses what the other accepts)")

    def compare_object(
        self, old: dict[str, Any], new: dict[str, Any], where: str, top: bool = False
    ) -> None:
        old_props: dict[str, Any] = old.get("properties", {})
        new_props: dict[str, Any] = new.get("properties", {})
        old_required = set(old.get("required", ()))
        new_required = set(new.get("required", ()))
        for name, old_prop in old_props.items():
            if top and name == "version":
                continue  # the revision number: compared in event()
            at = f"{where}.{name}" if where else name
            if name not in new_props:
                self.report(at, "removed (a consumer of the old revision relies on it)")
                continue
            new_prop = new_props[name]
            self.compare(old_prop, new_prop, at)
            old_default = _default(old_prop, self.old_root)
            new_default = _default(new_prop, self.new_root)
            if name in new_required and name not in old_required:
                self.report(at, "newly required (earlier payloads may lack it; a reader of "
                            "the new revision would refuse them)")
            elif name in old_required and name not in new_required:
                if new_default is _MISSING:
                    self.report(at, "became optional without a default in the schema (a "
                                "consumer of the old revision requires it)")
                elif not valid(new_default, old_prop, self.old_root):
                    self.report(at, f"became optional with default {_show(new_default)}, "
                                "which the old revision refuses")
            elif name not in new_required and old_default != new_default:
                self.report(at, f"default changed {_show(old_default)} -> "
                            f"{_show(new_default)} (readers of different revisions fill in "
                            "different values for the same payload)")
        closed = old.get("additionalProperties", True) is False
        for name, new_prop in new_props.items():
            if name in old_props:
                continue
            at = f"{where}.{name}" if where else name
            if closed:
                self.report(at, "added to a closed object (additionalProperties: false): a "
                            "consumer of the old revision refuses it")
            if name in new_required:
                self.report(at, "newly required (earlier payloads lack it; a new field needs a "
                            "default)")
                continue
            default = _default(new_prop, self.new_root)
            if default is not _MISSING and not valid(default, new_prop, self.new_root):
                self.report(at, f"new field's default {_show(default)} breaks its own schema")
        self.compare_extra(old.get("additionalProperties", True),
                           new.get("additionalProperties", True), where)

    def compare_extra(self, old: Any, new: Any, where: str) -> None:
        """``additionalProperties``: absent or ``true`` is an open object, a schema the type
        of a dict's values, ``false`` a closed object."""
        at = f"{where}{{}}"
        if isinstance(old, dict) and isinstance(new, dict):
            self.compare(old, new, at)
        elif old is False and new is not False:
            self.report(at, "the object is no longer closed (a consumer of the old revision "
                        "refuses extra fields)")
        elif new is False and old is not False:
            self.report(at, "the object became closed (a reader of the new revision refuses "
                        "extra fields earlier payloads may carry)")
        elif isinstance(new, dict) and not isinstance(old, dict):
            self.report(at, "values narrowed from any value to a schema")
        elif isinstance(old, dict) and not isinstance(new, dict):
            self.report(at, "values widened from a schema to any value")


# --- schema helpers -----------------------------------------------------------------------


def resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with a local ``$ref`` (``#/$defs/Name``) and a one-element ``allOf`` merged
    in; keywords next to the reference (pydantic puts ``default`` and ``description`` there)
    are kept."""
    seen: set[str] = set()
    while True:
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/") and ref not in seen:
            seen.add(ref)
            target: Any = root
            for part in ref.removeprefix("#/").split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"},
                      _REF: schema.get(_REF, ref)}
            continue
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and len(all_of) == 1:
            schema = {**all_of[0], **{k: v for k, v in schema.items() if k != "allOf"}}
            continue
        return schema


def options(schema: dict[str, Any], root: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The alternatives a schema allows, one per JSON type: ``(kind, schema)`` where kind is
    ``null``, ``boolean``, ``integer``, ``number``, ``string``, ``array``, ``object`` or
    ``any``."""
    schema = resolve(schema, root)
    union = schema.get("anyOf", schema.get("oneOf"))
    if isinstance(union, list):
        out: list[tuple[str, dict[str, Any]]] = []
        for option in union:
            out += options(option, root)
        return out
    declared = schema.get("type")
    if isinstance(declared, list):
        return [(kind, {**schema, "type": kind}) for kind in declared]
    if isinstance(declared, str):
        return [(declared, schema)]
    values = _values(schema)
    if values is not None:  # enum/const without a type: one alternative per JSON type
        by_kind: dict[str, list[Any]] = {}
        for value in values:
            by_kind.setdefault(_kind_of(value), []).append(value)
        return [(kind, {**{k: v for k, v in schema.items() if k != "const"}, "enum": vals})
                for kind, vals in by_kind.items()]
    if "properties" in schema or "additionalProperties" in schema:
        return [("object", schema)]
    if "items" in schema:
        return [("array", schema)]
    return [("any", schema)]


def canonical(schema: Any, root: dict[str, Any], depth: int = 0) -> Any:
    """``schema`` with references resolved and annotations dropped, for an exact comparison."""
    if depth > 32:  # a recursive model: deep enough to tell two schemas apart
        return "..."
    if isinstance(schema, list):
        return [canonical(item, root, depth + 1) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = resolve(schema, root)
    return {
        key: canonical(value, root, depth + 1)
        for key, value in sorted(schema.items())
        if key not in ANNOTATIONS and not key.startswith(("x-", "$$")) and key != "$defs"
    }


def valid(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> bool:
    """Whether ``value`` is valid under ``schema`` (the keywords the catalogue uses; ``format``
    is an annotation here, as in JSON Schema's default vocabulary)."""
    for kind, option in options(schema, root):
        if kind != "any" and _kind_of(value) != kind and not (
            kind == "number" and _kind_of(value) == "integer"
        ):
            continue
        values = _values(option)
        if values is not None and value not in values:
            continue
        if _within(value, kind, option, root):
            return True
    return False


def _within(value: Any, kind: str, schema: dict[str, Any], root: dict[str, Any]) -> bool:
    if kind == "string":
        return (len(value) >= schema.get("minLength", 0)
                and len(value) <= schema.get("maxLength", len(value))
                and ("pattern" not in schema or re.search(schema["pattern"], value) is not None))
    if kind in ("integer", "number"):
        return (value >= schema.get("minimum", value) and value <= schema.get("maximum", value)
                and ("exclusiveMinimum" not in schema or value > schema["exclusiveMinimum"])
                and ("exclusiveMaximum" not in schema or value < schema["exclusiveMaximum"]))
    if kind == "array":
        return (schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value))
                and all(valid(item, schema.get("items", {}), root) for item in value))
    if kind == "object":
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        return (all(name in value for name in schema.get("required", ()))
                and all(valid(v, props[k], root) if k in props
                        else extra is not False and (not isinstance(extra, dict)
                                                      or valid(v, extra, root))
                        for k, v in value.items()))
    return True


def _pair(
    old: list[tuple[str, dict[str, Any]]], new: list[tuple[str, dict[str, Any]]],
    old_root: dict[str, Any], new_root: dict[str, Any],
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]] | None:
    """Key each side's alternatives so that the same key means the same alternative: the JSON
    type, and for a union of several objects the value of their tag (discriminator), e.g.
    ``object kind="pdf"``. None when two alternatives cannot be told apart."""
    tag = None
    if max(sum(kind == "object" for kind, _ in side) for side in (old, new)) > 1:
        tag = _tag([s for kind, s in old if kind == "object"], old_root,
                   [s for kind, s in new if kind == "object"], new_root)
        if tag is None:
            return None
    out: list[dict[str, dict[str, Any]]] = []
    for side, root in ((old, old_root), (new, new_root)):
        keyed: dict[str, dict[str, Any]] = {}
        for kind, schema in side:
            key = kind
            if kind == "object" and tag is not None:
                values = _values(resolve(schema["properties"][tag], root)) or []
                key = f"object {tag}={_show(values[0])}"
            if key in keyed:
                return None
            keyed[key] = schema
        out.append(keyed)
    return out[0], out[1]


def _tag(
    old: list[dict[str, Any]], old_root: dict[str, Any],
    new: list[dict[str, Any]], new_root: dict[str, Any],
) -> str | None:
    """The property every object alternative (on both sides) pins to one value: the tag of a
    tagged union (pydantic's ``discriminator``, or a ``Literal`` field with one value)."""
    common: set[str] | None = None
    for schemas, root in ((old, old_root), (new, new_root)):
        for schema in schemas:
            pinned = {name for name, prop in schema.get("properties", {}).items()
                      if len(_values(resolve(prop, root)) or []) == 1}
            common = pinned if common is None else common & pinned
    return min(common) if common else None


def _values(schema: dict[str, Any]) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    if "enum" in schema:
        return list(schema["enum"])
    return None


def _default(prop: dict[str, Any], root: dict[str, Any]) -> Any:
    if "default" in prop:
        return prop["default"]
    return resolve(prop, root).get("default", _MISSING)


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _kinds(kinds: list[str]) -> str:
    return " | ".join(kinds)


def _show(value: Any) -> str:
    if value is _MISSING:
        return "(none)"
    return json.dumps(value, sort_keys=True, ensure_ascii=False)
