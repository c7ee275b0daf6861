"""ServiceProcess: start a command, wait for HTTP 200, stop, kill, restart."""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from postroom_testing.procs import ProcessExitedError, ServiceProcess, free_port


def test_free_port_never_repeats() -> None:
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50


def _http_server(factory: Callable[..., ServiceProcess], tmp_path: Path) -> ServiceProcess:
    port = free_port()
    (tmp_path / "health").write_text("ok")
    return factory(
        [
            sys.executable,
            "-u",
            "-m",
            "http.server",
            str(port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(tmp_path),
        ],
        name="http-server",
        ready_url=f"http://127.0.0.1:{port}/health",
        env={"POSTROOM_MARKER": "1"},
    )


def test_start_stop_restart_kill(service_process: Callable[..., ServiceProcess], tmp_path) -> None:
    svc = _http_server(service_process, tmp_path)
    assert not svc.is_running
    svc.start()
    assert svc.is_running
    with urllib.request.urlopen(svc.ready_url) as resp:
        assert resp.read() == b"ok"

    assert svc.stop() == -15  # SIGTERM, the server does not handle it
    assert not svc.is_running
    svc.start()  # same command, env, port
    assert urllib.request.urlopen(svc.ready_url).status == 200
    assert svc.kill() == -9
    assert svc.starts == 2
    log = svc.log_text()
    assert log.count("===== start #") == 2
    assert "GET /health" in log  # the child's output is captured


async def test_async_start_and_stop(service_process, tmp_path) -> None:
    svc = _http_server(service_process, tmp_path)
    await svc.astart()
    assert svc.is_running
    await svc.arestart()
    assert svc.is_running
    assert await svc.astop() == -15


def test_exit_before_ready_reports_the_log(service_process) -> None:
    svc = service_process(
        [sys.executable, "-c", "import sys; print('bad config: SMTP_PORT'); sys.exit(3)"],
        name="broken",
        ready_url=f"http://127.0.0.1:{free_port()}/health/ready",
    )
    with pytest.raises(ProcessExitedError, match=r"(?s)exited with code 3.*bad config: SMTP_PORT"):
        svc.start(timeout=10)


def test_not_ready_in_time_is_killed(service_process) -> None:
    svc = service_process(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        name="sleeper",
        ready_url=f"http://127.0.0.1:{free_port()}/health",
    )
    with pytest.raises(TimeoutError, match="not ready after"):
        svc.start(timeout=0.5)
    assert not svc.is_running


def test_console_script_is_found_next_to_python(service_process) -> None:
    svc = service_process("nats-server", name="nats-version")
    assert Path(svc.argv[0]).parent == Path(sys.executable).parent
