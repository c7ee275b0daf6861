"""Who publishes and who consumes each event: one :class:`ServiceSpec` per service.

Each service declares its spec in its own package (``postroom_<name>/spec.py``, importing
nothing but ``postroom_contracts``) and registers it as an entry point::

    [project.entry-points."postroom.services"]
    attachment-extractor = "postroom_attachment_extractor.spec:SERVICE"

:func:`registered` is the one list of services: the embedded stack (``postroom up``), the
AsyncAPI document and the deployment tests read it. Nothing here does I/O beyond reading the
installed packages' entry points.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points

from .events import Event

GROUP = "postroom.services"

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
# a JetStream consumer name: no dots, wildcards or whitespace (it is also a subject token)
DURABLE_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")


class ServiceRegistryError(Exception):
    """A registered service is malformed, or two services clash."""


@dataclass(frozen=True)
class Consumes:
    """A durable JetStream consumer of one event type (every tenant).

    ``durable`` is the consumer's name on the server and also the idempotency scope
    (``processed_messages.consumer``) and the dead-letter subject (``postroom.dlq.<durable>``).
    Never rename it: a new name is a new consumer that starts from the stream's first message
    (14 days of events handled again) and leaves the old one behind holding messages.
    """

    event: type[Event]
    durable: str
    summary: str = ""

    def __post_init__(self) -> None:
        if not DURABLE_PATTERN.match(self.durable):
            raise ServiceRegistryError(
                f"durable consumer name {self.durable!r}: letters, digits, '-' and '_' only")


@dataclass(frozen=True)
class Port:
    """A port the service listens on besides HTTP (e.g. SMTP).

    ``env`` is the variable that sets it. ``container`` is what the process binds in a
    container (above 1023: containers run unprivileged), ``published`` what clients connect
    to: docker-compose publishes it, the Helm chart's Service exposes it as ``servicePort``.
    A ``public`` port is published on every interface and open to any source in the
    NetworkPolicy; otherwise it stays on loopback / in-cluster.
    """

    name: str
    env: str
    container: int
    published: int
    public: bool = False

    def __post_init__(self) -> None:
        if not re.match(r"^[a-z][a-z0-9-]{0,14}$", self.name) or self.name == "http":
            raise ServiceRegistryError(
                f"port name {self.name!r}: a Kubernetes port name (at most 15 characters, "
                "lower-case), not 'http' (every service has that one)")
        if not re.match(r"^[A-Z][A-Z0-9_]*$", self.env):
            raise ServiceRegistryError(f"port {self.name}: env {self.env!r} is not a variable")
        if not 1023 < self.container < 65536 or not 0 < self.published < 65536:
            raise ServiceRegistryError(
                f"port {self.name}: container port {self.container} must be 1024-65535 "
                f"(unprivileged), published {self.published} 1-65535")


@dataclass(frozen=True)
class ServiceSpec:
    """What the rest of Postroom must know about a service; declared by the service itself."""

    name: str
    """dash-case; the folder under services/, OTEL_SERVICE_NAME, compose service and Helm
    component."""
    module: str
    """The package, run as ``python -m <module>``: ``postroom_<name with underscores>``."""
    http_port: int
    """Default HTTP port (health, metrics, API): 8025, 8026, ... one each."""
    summary: str
    """One line: what the service does."""
    consumes: tuple[Consumes, ...] = ()
    publishes: tuple[type[Event], ...] = ()
    ports: tuple[Port, ...] = ()
    """Container ports besides HTTP (compose, Helm, Dockerfile EXPOSE)."""
    projects: bool = False
    """Reads every event of the catalogue in stream order with an ordered (ephemeral) consumer
    from the position kept in its own store, and builds a read model from them (a projection:
    the console). No durable consumer on the server and no dead letters: a rebuild drops the
    read model and reads the stream again from its first message."""
    database: bool = True
    """Owns a PostgreSQL database named like :attr:`store_name` (deploy/postgres/init.sql, the
    DATABASE_URL of compose and of the chart's database.urls)."""
    embedded_env: Mapping[str, str] = field(default_factory=dict, hash=False)
    """Variables ``postroom up`` sets for this service on top of the common wiring; values are
    ``str.format`` templates over the stack's settings (``{smtp_host}``, ``{smtp_port}``,
    ``{data_dir}``, ... any attribute of ``postroom_cli.stack.StackConfig``)."""
    embedded_addresses: tuple[tuple[str, str], ...] = ()
    """Lines of the ``postroom up`` banner: (label, template over the same settings)."""

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise ServiceRegistryError(f"service name {self.name!r}: dash-case expected")
        durables = [c.durable for c in self.consumes]
        if len(set(durables)) != len(durables):
            raise ServiceRegistryError(f"{self.name}: a durable consumer name is used twice")
        events = [c.event.event_type for c in self.consumes]
        if len(set(events)) != len(events):
            raise ServiceRegistryError(f"{self.name}: one consumer per event type")
        published = [e.event_type for e in self.publishes]
        if len(set(published)) != len(published):
            raise ServiceRegistryError(f"{self.name}: an event is listed twice in publishes")
        names = [p.name for p in self.ports]
        if len(set(names)) != len(names):
            raise ServiceRegistryError(f"{self.name}: two ports share a name")

    @property
    def package(self) -> str:
        """The distribution name (pyproject ``[project] name``)."""
        return f"postroom-{self.name}"

    @property
    def store_name(self) -> str:
        """Name of its database (PostgreSQL) or SQLite file."""
        return self.name.replace("-", "_")

    def durable_for(self, event: type[Event]) -> str:
        """The durable consumer name this service consumes ``event`` with."""
        for consumer in self.consumes:
            if consumer.event is event:
                return consumer.durable
        raise KeyError(f"{self.name} does not consume {event.event_type}")


def load(entry_point: EntryPoint) -> ServiceSpec:
    try:
        spec = entry_point.load()
    except Exception as exc:
        raise ServiceRegistryError(
            f"entry point {entry_point.name} = {entry_point.value!r} cannot be loaded: "
            f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(spec, ServiceSpec):
        raise ServiceRegistryError(
            f"entry point {entry_point.name} = {entry_point.value!r} is a "
            f"{type(spec).__name__}, not a ServiceSpec")
    if spec.name != entry_point.name:
        raise ServiceRegistryError(
            f"entry point {entry_point.name!r} holds the spec of {spec.name!r}: name the entry "
            "point after the service")
    return spec


def validate(specs: Iterable[ServiceSpec]) -> tuple[ServiceSpec, ...]:
    """The specs in service order (by HTTP port); refuses clashes between services."""
    ordered = tuple(sorted(specs, key=lambda s: (s.http_port, s.name)))
    seen: dict[str, str] = {}

    def claim(key: str, owner: str) -> None:
        if key in seen:
            raise ServiceRegistryError(f"{key} is claimed by both {seen[key]} and {owner}")
        seen[key] = owner

    for spec in ordered:
        claim(f"service name {spec.name}", spec.name)
        claim(f"module {spec.module}", spec.name)
        claim(f"HTTP port {spec.http_port}", spec.name)
        for consumer in spec.consumes:
            claim(f"durable consumer {consumer.durable}", spec.name)
        for port in spec.ports:
            claim(f"published port {port.published}", spec.name)
    return ordered


def registered() -> tuple[ServiceSpec, ...]:
    """Every service installed in this environment, in service order (by HTTP port)."""
    return validate(load(ep) for ep in entry_points(group=GROUP))


def producers(specs: Iterable[ServiceSpec]) -> dict[str, list[str]]:
    """event type -> names of the services that publish it."""
    out: dict[str, list[str]] = {}
    for spec in specs:
        for event in spec.publishes:
            out.setdefault(event.event_type, []).append(spec.name)
    return out


def projectors(specs: Iterable[ServiceSpec]) -> list[str]:
    """Names of the services that read every event (``projects``)."""
    return [spec.name for spec in specs if spec.projects]


def consumers(specs: Iterable[ServiceSpec]) -> dict[str, list[tuple[str, Consumes]]]:
    """event type -> (service name, consumer) of every durable consumer of it."""
    out: dict[str, list[tuple[str, Consumes]]] = {}
    for spec in specs:
        for consumer in spec.consumes:
            out.setdefault(consumer.event.event_type, []).append((spec.name, consumer))
    return out
