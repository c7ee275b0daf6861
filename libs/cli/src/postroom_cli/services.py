"""The services of the embedded stack: every registered service (``postroom.services`` entry
points, see ``postroom_contracts.services``), in service order. Adding a service adds nothing
here: its own ``spec.py`` says what ``postroom up`` needs to know."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from postroom_contracts.services import ServiceSpec, registered


class _Settings:
    """The stack's settings by attribute name, for ``str.format_map`` templates."""

    def __init__(self, cfg: object) -> None:
        self._cfg = cfg

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self._cfg, key)
        except AttributeError:
            raise KeyError(key) from None


@dataclass(frozen=True)
class Service:
    name: str  # dash-case, = OTEL_SERVICE_NAME and the folder under services/
    module: str  # run as `python -m <module>`
    http_port: int  # default HTTP port; `postroom up --http-port-base B` uses B + (port - 8025)
    # variables set on top of the stack's wiring: str.format templates over the stack's settings
    env_templates: Mapping[str, str] = field(default_factory=dict, hash=False)
    # lines for the "is up" summary: (label, format string over the stack's settings)
    addresses: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_spec(cls, spec: ServiceSpec) -> Service:
        return cls(spec.name, spec.module, spec.http_port, dict(spec.embedded_env),
                   spec.embedded_addresses)

    def env(self, cfg: object) -> dict[str, str]:
        """This service's own variables for a stack with settings ``cfg`` (a ``StackConfig``);
        a template naming a setting the stack does not have raises ``KeyError``."""
        settings = _Settings(cfg)
        return {name: str(template).format_map(settings)
                for name, template in self.env_templates.items()}

    @property
    def store_name(self) -> str:
        return self.name.replace("-", "_")

    def http_port_from(self, base: int) -> int:
        return base + (self.http_port - HTTP_PORT_BASE)

    def entry_point_missing(self) -> str | None:
        """Why ``python -m <module>`` cannot run, or None when it can."""
        try:
            spec = importlib.util.find_spec(f"{self.module}.__main__")
        except ModuleNotFoundError:
            return f"package {self.module} is not installed"
        if spec is None:
            return f"{self.module} has no __main__ module yet"
        return None


HTTP_PORT_BASE = 8025

SERVICES: tuple[Service, ...] = tuple(Service.from_spec(spec) for spec in registered())

BY_NAME = {s.name: s for s in SERVICES}
