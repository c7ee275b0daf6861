"""The services of the embedded stack: one row each (a new service is one more line)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


class StackPorts(Protocol):
    smtp_host: str
    smtp_port: int


def _no_env(_: StackPorts) -> dict[str, str]:
    return {}


@dataclass(frozen=True)
class Service:
    name: str  # dash-case, = OTEL_SERVICE_NAME and the folder under services/
    module: str  # run as `python -m <module>`
    http_port: int  # default HTTP port; `postroom up --http-port-base B` uses B + (port - 8025)
    env: Callable[[StackPorts], dict[str, str]] = field(default=_no_env)
    # lines for the "is up" summary: (label, format string over the stack's settings)
    addresses: tuple[tuple[str, str], ...] = ()

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

SERVICES: tuple[Service, ...] = (
    Service("smtp-ingress", "postroom_smtp_ingress", 8025,
            env=lambda s: {"SMTP_HOST": s.smtp_host, "SMTP_PORT": str(s.smtp_port)},
            addresses=(("SMTP", "{smtp_host}:{smtp_port}"),)),
    Service("attachment-extractor", "postroom_attachment_extractor", 8026),
)

BY_NAME = {s.name: s for s in SERVICES}
