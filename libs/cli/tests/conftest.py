"""Fixtures for the CLI tests: run `postroom` in-process (CliRunner) or as a real process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import nats
import pytest
from nats.js import JetStreamContext
from typer.testing import CliRunner, Result

from postroom_cli.cli import app

T = TypeVar("T")


@pytest.fixture
def cli() -> Callable[..., Result]:
    """``cli("tenants", "list", nats_url=...)``: run the CLI in-process, like a user would."""
    runner = CliRunner()

    def invoke(*args: str, nats_url: str | None = None, input: str | None = None) -> Result:
        argv = (["--nats-url", nats_url] if nats_url else []) + list(args)
        return runner.invoke(app, argv, input=input, env={"NATS_URL": None},
                             catch_exceptions=False)

    return invoke


@pytest.fixture
def with_js(nats_url: str) -> Callable[[Callable[[JetStreamContext], Awaitable[T]]], T]:
    """Run ``await fn(js)`` against the test nats-server from a synchronous test."""

    def run(fn: Callable[[JetStreamContext], Awaitable[T]]) -> T:
        async def go() -> T:
            nc = await nats.connect(nats_url)
            try:
                return await fn(nc.jetstream())
            finally:
                await nc.close()

        return asyncio.run(go())

    return run


class CliProcess:
    """``python -m postroom_cli ...`` as a real process, its output collected line by line."""

    def __init__(self, args: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> None:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env.pop("NATS_URL", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "postroom_cli", *args],
            cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        self._closed = 0
        for stream, sink in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr)):
            threading.Thread(target=self._read, args=(stream, sink), daemon=True).start()

    def _read(self, stream: Any, sink: list[str]) -> None:
        for line in stream:
            with self._changed:
                sink.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._closed += 1
            self._changed.notify_all()

    @property
    def output(self) -> str:
        return "\n".join(self.stdout)

    def _dump(self) -> str:
        return f"stdout:\n{self.output}\nstderr:\n" + "\n".join(self.stderr)

    def wait_for(self, text: str, timeout: float = 60.0, *, stream: str = "stdout",
                 after: int = 0) -> str:
        """The first line (from index ``after``) containing ``text``; fails with the output."""
        sink = self.stdout if stream == "stdout" else self.stderr
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in sink[after:]:
                    if text in line:
                        return line
                if self._closed == 2:
                    pytest.fail(f"process exited ({self.proc.wait()}) without printing "
                                f"{text!r}:\n{self._dump()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"no line with {text!r} after {timeout}s:\n{self._dump()}")
                self._changed.wait(0.2)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def cli_process(tmp_path: Path) -> Iterator[Callable[..., CliProcess]]:
    started: list[CliProcess] = []

    def start(*args: str, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> CliProcess:
        proc = CliProcess(list(args), cwd=cwd or tmp_path, env=env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()  # its children die with it (PR_SET_PDEATHSIG)
