"""Revisions of an event type, a new major side by side, and the tolerant reader.

The schema files live in a temporary folder here; the committed catalogue is checked by
test_catalogue.py (``check() == []``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from pydantic import BaseModel, Field, ValidationError

from postroom_contracts import CATALOGUE, Event, decode, subject_filter
from postroom_contracts.catalogue import event_schema, schema_problems, write_schemas
from postroom_contracts.compatibility import incompatibilities

COMMON = {"event_id": "e-1", "tenant": "acme", "mail_key": "k" * 32}


class Thing(Event):
    """Revision 1 of test.thing, as the consumers built on it know it."""

    event_type: ClassVar[str] = "test.thing"
    schema_version: ClassVar[int] = 1

    name: str
    tags: list[str] = Field(default_factory=list)


class ThingRetypedInPlace(Event):
    """An incompatible edit of revision 1 (tags: list[str] -> list[int])."""

    event_type: ClassVar[str] = "test.thing"
    schema_version: ClassVar[int] = 1

    name: str
    tags: list[int] = Field(default_factory=list)


class ThingRev2(Event):
    """Revision 2: a documented addition (``colour``; null means "no colour", where revision
    1 payloads simply did not know)."""

    event_type: ClassVar[str] = "test.thing"
    schema_version: ClassVar[int] = 2

    name: str
    tags: list[str] = Field(default_factory=list)
    colour: str | None = None


class ThingRev2Retyped(Event):
    event_type: ClassVar[str] = "test.thing"
    schema_version: ClassVar[int] = 2

    name: str
    tags: list[int] = Field(default_factory=list)


class Tag(BaseModel):
    label: str
    weight: int


class ThingV2(Event):
    """The breaking change as a new major: its own event type and subject."""

    event_type: ClassVar[str] = "test.thing.v2"
    schema_version: ClassVar[int] = 1

    name: str
    tags: list[Tag] = Field(default_factory=list)


class ThingPinned(Event):
    """How every event declared its version before: a reader refusing later revisions."""

    event_type: ClassVar[str] = "test.pinned"
    schema_version: ClassVar[int] = 1
    version: Literal[1] = 1  # type: ignore[assignment]

    name: str


def files(root: Path) -> dict[str, Any]:
    return {str(p.relative_to(root)): json.loads(p.read_text()) for p in root.rglob("*.json")}


def test_a_compatible_edit_in_place_is_drift_until_generated(tmp_path: Path) -> None:
    write_schemas([Thing], tmp_path)

    class ThingWithNote(Thing):
        note: str | None = None

    assert schema_problems([ThingWithNote], tmp_path) == [
        "test.thing v1: schema drift; run `python -m postroom_contracts generate`"]
    write_schemas([ThingWithNote], tmp_path)
    assert schema_problems([ThingWithNote], tmp_path) == []


def test_an_incompatible_edit_in_place_is_refused(tmp_path: Path) -> None:
    write_schemas([Thing], tmp_path)
    before = files(tmp_path)
    [problem] = schema_problems([ThingRetypedInPlace], tmp_path)
    assert problem.startswith("test.thing v1: incompatible change: against v1: tags[]: type "
                              "changed string -> integer")
    assert "new major event type on its own subject" in problem
    with pytest.raises(SystemExit, match="tags\\[\\]: type changed string -> integer"):
        write_schemas([ThingRetypedInPlace], tmp_path)
    assert files(tmp_path) == before


def test_a_new_revision_keeps_the_old_schema_as_its_baseline(tmp_path: Path) -> None:
    write_schemas([Thing], tmp_path)
    v1 = files(tmp_path)["test.thing/v1.json"]
    assert schema_problems([ThingRev2], tmp_path) == [
        "test.thing v2: no committed schema (.../test.thing/v2.json); run "
        "`python -m postroom_contracts generate`".replace(".../", f"{tmp_path.name}/")]
    assert write_schemas([ThingRev2], tmp_path) == [tmp_path / "test.thing" / "v2.json"]
    assert files(tmp_path)["test.thing/v1.json"] == v1  # never rewritten
    assert files(tmp_path)["test.thing/v2.json"]["properties"]["version"]["default"] == 2
    assert schema_problems([ThingRev2], tmp_path) == []
    # the baseline is required: without it nothing says what revision 1 promised
    (tmp_path / "test.thing" / "v1.json").unlink()
    [missing] = schema_problems([ThingRev2], tmp_path)
    assert missing.startswith("test.thing v1: schema file of an earlier revision missing")


def test_a_new_revision_must_stay_compatible_with_every_earlier_one(tmp_path: Path) -> None:
    write_schemas([Thing], tmp_path)
    problems = schema_problems([ThingRev2Retyped], tmp_path)
    assert any("against v1: tags[]: type changed string -> integer" in p for p in problems)
    with pytest.raises(SystemExit, match="against v1"):
        write_schemas([ThingRev2Retyped], tmp_path)
    # even once revision 2 is committed, revision 3 is checked against revision 1 too
    write_schemas([ThingRev2], tmp_path)

    class ThingRev3(ThingRev2):
        schema_version: ClassVar[int] = 3
        tags: list[str] = Field(default_factory=list, max_length=3)  # type: ignore[assignment]

    [problem] = [p for p in schema_problems([ThingRev3], tmp_path) if "incompatible" in p]
    assert "against v1: tags: new constraint maxItems=3" in problem
    assert "against v2: tags: new constraint maxItems=3" in problem


def test_a_revision_number_never_goes_back(tmp_path: Path) -> None:
    write_schemas([Thing], tmp_path)
    write_schemas([ThingRev2], tmp_path)
    assert any("v2.json is committed: a revision number never goes back" in problem
               for problem in schema_problems([Thing], tmp_path))


def test_a_breaking_change_is_a_new_major_published_side_by_side(tmp_path: Path) -> None:
    write_schemas([Thing], tmp_path)
    # in place it is refused ...
    assert incompatibilities(event_schema(Thing), event_schema(ThingV2)) != []
    # ... as a new event type next to the old one it is not
    write_schemas([Thing, ThingV2], tmp_path)
    assert schema_problems([Thing, ThingV2], tmp_path) == []
    assert sorted(files(tmp_path)) == ["test.thing.v2/v1.json", "test.thing/v1.json"]
    old = Thing(**COMMON, name="x", tags=["a"])
    new = ThingV2.model_validate({**COMMON, "name": "x", "tags": [{"label": "a", "weight": 1}]})
    assert old.nats_subject == "postroom.test.thing.acme"
    assert new.nats_subject == "postroom.test.thing.v2.acme"
    # one more token: the old type's filter (one token for the tenant) never matches it
    assert subject_filter("test.thing") == "postroom.test.thing.*"
    assert len(new.nats_subject.split(".")) == len(subject_filter("test.thing").split(".")) + 1
    # a reader of the old type could not have read the new payload: that is why it moved
    with pytest.raises(ValidationError):
        decode(Thing, new.model_dump_json())


def test_a_deprecated_type_says_so_in_its_schema() -> None:
    class OldThing(Thing):
        deprecated: ClassVar[str | None] = "replaced by test.thing.v2; published until 2027-06-30"

    schema = event_schema(OldThing)
    assert schema["deprecated"] is True and "test.thing.v2" in schema["x-deprecated"]
    assert "deprecated" not in event_schema(Thing)
    assert incompatibilities(event_schema(Thing), schema) == []  # an annotation only


def test_a_version_pinned_to_one_revision_is_refused(tmp_path: Path) -> None:
    write_schemas([Thing], tmp_path)
    problems = schema_problems([ThingPinned], tmp_path)
    assert any("`version` is declared as" in p and "refuses every later revision" in p
               for p in problems), problems
    with pytest.raises(SystemExit, match="refuses every later revision"):
        write_schemas([ThingPinned], tmp_path)
    # and why: it refuses a later revision's payload
    later = {**COMMON, "name": "x", "version": 2}
    with pytest.raises(ValidationError):
        decode(ThingPinned, json.dumps(later))


def test_a_reader_of_revision_1_decodes_revision_2_ignoring_what_it_does_not_know() -> None:
    payload = ThingRev2(**COMMON, name="x", tags=["a"], colour="red").model_dump_json()
    assert json.loads(payload)["version"] == 2
    event = decode(Thing, payload)
    assert isinstance(event, Thing)
    assert (event.name, event.tags, event.version) == ("x", ["a"], 2)
    assert not hasattr(event, "colour")
    assert decode(Thing, payload.encode()) == event  # bytes, as they come from NATS


def test_a_reader_of_revision_2_decodes_revision_1_with_the_defaults() -> None:
    payload = Thing(**COMMON, name="x").model_dump_json()
    event = decode(ThingRev2, payload)
    assert (event.version, event.colour) == (1, None)


def test_a_payload_that_is_not_the_event_is_still_refused() -> None:
    with pytest.raises(ValidationError):
        decode(Thing, b'{"not": "an event"}')
    with pytest.raises(ValidationError):
        decode(Thing, json.dumps({**COMMON, "name": "x", "version": 0}))


def test_each_class_writes_its_own_revision() -> None:
    assert Thing(**COMMON, name="x").version == 1
    assert ThingRev2(**COMMON, name="x").version == 2
    assert event_schema(ThingRev2)["properties"]["version"]["default"] == 2
    assert event_schema(ThingRev2)["$id"] == "urn:postroom:event:test.thing:v2"


@pytest.mark.parametrize("event", CATALOGUE, ids=lambda e: e.event_type)
def test_every_catalogued_event_accepts_a_later_revision(event: type[Event]) -> None:
    """A next revision that adds an optional field is compatible, and its payload's version
    is accepted by the current class (no ``Literal`` pin)."""
    later = type(f"{event.__name__}Next", (event,), {
        "__annotations__": {"schema_version": ClassVar[int], "added": str | None},
        "schema_version": event.schema_version + 1, "added": None,
        "__module__": __name__,
    })
    assert later.model_fields["version"].default == event.schema_version + 1
    assert incompatibilities(event_schema(event), event_schema(later)) == []
    version = event.model_fields["version"]
    assert version.annotation is int and version.default == event.schema_version
