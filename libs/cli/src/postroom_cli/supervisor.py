"""The children of ``postroom up`` on its console: the runtime's one process supervisor
(``postroom_runtime.supervisor``), each child's output prefixed with its name and what
happens to it said there.

Every child runs in its own session (process group): Ctrl-C in the terminal reaches only
``postroom up``, which then stops the services first and nats-server last, instead of everything
dying at once. On Linux a child also gets ``PR_SET_PDEATHSIG=SIGKILL``, so nothing outlives a
``postroom up`` that is itself killed with SIGKILL.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import IO, Any

from postroom_runtime import supervisor

Sink = Callable[[str], None]

_COLORS = ("cyan", "green", "magenta", "blue", "yellow", "bright_cyan", "bright_green")


class Console:
    """Prefixes each line with its source (``smtp-ingress | ...``) and flushes at once."""

    def __init__(self, stream: IO[str] | None = None, color: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.color = self.stream.isatty() if color is None else color
        self.width = len("postroom")
        self._colors: dict[str, str] = {}

    def register(self, name: str) -> None:
        self.width = max(self.width, len(name))
        self._colors.setdefault(name, _COLORS[len(self._colors) % len(_COLORS)])

    def line(self, source: str, text: str) -> None:
        prefix = f"{source:<{self.width}} |"
        if self.color:
            import typer

            prefix = typer.style(prefix, fg=self._colors.get(source, "white"),
                                 bold=source == "postroom")
        try:
            self.stream.write(f"{prefix} {text}\n" if text else f"{prefix}\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            pass

    def say(self, text: str) -> None:
        self.line("postroom", text)


# what a person at the console is told (a stop and a child's own ready line are not news here)
_SAID = frozenset({"restarting", "restarted", "restart_failed", "killing"})


class Supervised(supervisor.Supervised):
    """A child of ``postroom up``: its output lines go to the console under its name (or to
    ``output``), its restarts, failures and kills are said there."""

    def __init__(self, name: str, argv: Sequence[str], *, console: Console,
                 output: Sink | None = None, **options: Any) -> None:
        super().__init__(name, argv, output=output or (lambda text: console.line(name, text)),
                         report=self._tell, **options)
        self.console = console

    def _tell(self, report: supervisor.Report) -> None:
        if report.kind == "config_error":
            self.console.say(f"{report.message}; fix the setting it names and run "
                             "`postroom up` again")
        elif report.kind in _SAID:
            self.console.say(report.message)
