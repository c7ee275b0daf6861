"""Reading events: the tolerant reader every consumer decodes with.

A consumer built on revision N of an event type reads payloads of every revision of that type:
later ones (their new fields are ignored, ``event.version`` tells which revision the producer
wrote) and earlier ones (fields added since take their defaults). The compatibility rules
(:mod:`postroom_contracts.compatibility`, enforced by ``python -m postroom_contracts check``)
are what make that safe. A breaking change never reaches an old reader: it is a new event type
on its own subject.
"""

from __future__ import annotations

from typing import TypeVar

from .events import Event

E = TypeVar("E", bound=Event)


def decode(event_type: type[E], body: bytes | str) -> E:
    """The event of type ``event_type`` in a JSON payload, of any revision of that type.

    Raises :class:`pydantic.ValidationError` when the payload is not such an event (that is a
    poison message: a later revision is never a reason to refuse it).
    """
    return event_type.model_validate_json(body)
