"""SMTP_WORKERS > 1: the console script's primary and worker processes share the SMTP port,
count into one /metrics, report readiness, restart a dead worker and stop together."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import smtplib
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from smtp_ingress_testkit import DOMAIN, Ingress, make_mail

from postroom_smtp_ingress.config import IngressSettings
from postroom_smtp_ingress.workers import with_settings
from postroom_testing.nats import NatsServer
from postroom_testing.procs import free_port
from postroom_testing.procs import pid_running as _alive


def test_a_worker_gets_exactly_the_primarys_settings(
    monkeypatch: pytest.MonkeyPatch, server_cert: tuple[Path, Path], tenants_file: Path
) -> None:
    cert, key = server_cert
    primary = IngressSettings(
        smtp_workers=3, smtp_port=2525, smtp_tls_cert=cert, smtp_tls_key=key,
        smtp_tls_port=4650, smtp_require_tls=True, smtp_auth_users=SecretStr("alice:pw"),
        smtp_auth_required=True, smtp_domains="a.example,b.example", smtp_timeout=12.5,
        tenants_seed_file=tenants_file, blob_small_max_bytes=1000, log_level="WARNING",
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://elsewhere:4318")  # unset below
    env = with_settings(dict(os.environ), primary)
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env
    for name in list(os.environ):
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    worker = IngressSettings()
    assert worker.model_dump() == primary.model_dump()
    assert worker.auth_users == {"alice": "pw"}


def _records(log: str) -> list[dict[str, Any]]:
    # the processes are still writing: the text after the last newline may be half a line
    complete = log.split("\n")[:-1]
    return [json.loads(line) for line in complete if line.startswith("{")]


async def _eventually(check: Any, within: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in labels.items()):
                total += sample.value
    return total


class Service:
    def __init__(self, proc: Any, http_port: int) -> None:
        self.proc = proc
        self.http = f"http://127.0.0.1:{http_port}"

    def records(self) -> list[dict[str, Any]]:
        return _records(self.proc.log_text())

    @property
    def smtp_port(self) -> int:
        return next(r["smtp_port"] for r in self.records()
                    if r["message"] == "SMTP listening" and r["worker"] == 0)

    def worker_pids(self) -> list[int]:
        return [r["pid"] for r in self.records() if r["message"] == "SMTP worker serving"]

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.http, timeout=10) as client:
            return await client.get(path)

    async def send(self, count: int, prefix: str) -> list[int]:
        def one(i: int) -> int:
            # a new connection each: the kernel spreads them over the processes
            with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) as client:
                client.ehlo("client.example")
                client.mail("buyer@supplier.example")
                client.rcpt(f"orders+acme@{DOMAIN}")
                return client.data(make_mail(message_id=f"<{prefix}-{i}@x>"))[0]

        return list(await asyncio.gather(*(asyncio.to_thread(one, i) for i in range(count))))


@pytest.fixture
async def start_service(
    service_process: Any, nats_server: NatsServer, tmp_path: Path, tenants_file: Path
) -> Any:
    async def start(workers: int = 2) -> Service:
        http_port = free_port()
        proc = service_process(
            "postroom-smtp-ingress",
            env={
                "NATS_URL": nats_server.url,
                "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/ingress.db",
                "HTTP_PORT": str(http_port),
                "SMTP_PORT": "0",  # the workers must learn the port the primary bound
                "SMTP_WORKERS": str(workers),
                "TENANTS_SEED_FILE": str(tenants_file),
            },
            ready_url=f"http://127.0.0.1:{http_port}/health/ready",
        )
        await proc.astart()  # ready: the workers serve too
        return Service(proc, http_port)

    return start


async def test_workers_share_the_port_and_one_metrics_endpoint(
    start_service: Any, nats_server: NatsServer
) -> None:
    service = await start_service(workers=3)
    ready = (await service.get("/health/ready")).json()
    assert ready["checks"]["workers"] == "ok"
    assert len(service.worker_pids()) == 2
    listening = [r for r in service.records() if r["message"] == "SMTP listening"]
    assert sorted(r["worker"] for r in listening) == [0, 1, 2]
    assert {r["smtp_port"] for r in listening} == {service.smtp_port}

    assert await service.send(60, "spread") == [250] * 60
    handled_by = {r["worker"] for r in service.records() if r["message"] == "mail accepted"}
    assert len(handled_by) >= 2  # 60 connections over 3 processes
    assert len(await Ingress.events_at(nats_server.url)) == 60

    metrics = (await service.get("/metrics")).text  # the sum over all processes
    assert _metric(metrics, "postroom_smtp_messages_total", result="accepted") == 60
    assert _metric(metrics, "postroom_smtp_data_duration_seconds_count") == 60

    async def sessions_closed() -> bool:  # a livesum gauge over the processes
        text = (await service.get("/metrics")).text
        return _metric(text, "postroom_smtp_sessions_active") == 0

    await _eventually(sessions_closed, within=10)
    # a duplicate is recognised whichever process got the first copy
    assert await service.send(10, "spread") == [250] * 10
    assert len(await Ingress.events_at(nats_server.url)) == 60
    metrics = (await service.get("/metrics")).text
    assert _metric(metrics, "postroom_smtp_messages_total", result="duplicate") == 10

    pids = service.worker_pids()
    assert await service.proc.astop(timeout=30) == 0
    assert not any(_alive(pid) for pid in pids)


async def test_a_worker_that_dies_is_restarted(start_service: Any) -> None:
    service = await start_service(workers=2)
    [pid] = service.worker_pids()
    os.kill(pid, signal.SIGKILL)

    async def replaced() -> bool:
        return len(service.worker_pids()) == 2

    await _eventually(replaced)
    new_pid = service.worker_pids()[-1]
    assert new_pid != pid and _alive(new_pid)
    assert any(r["message"] == "SMTP worker exited, restarting it" and r["smtp_worker"] == 1
               for r in service.records())
    assert (await service.get("/health/ready")).status_code == 200
    assert await service.send(20, "after-restart") == [250] * 20
    assert await service.proc.astop(timeout=30) == 0
    assert not _alive(new_pid)


async def test_readiness_fails_while_a_worker_is_down(start_service: Any) -> None:
    service = await start_service(workers=2)
    [pid] = service.worker_pids()
    os.kill(pid, signal.SIGKILL)

    async def not_ready() -> bool:
        response = await service.get("/health/ready")
        return response.status_code == 503 and "workers" in response.json()["checks"] and \
            response.json()["checks"]["workers"] != "ok"

    await _eventually(not_ready, within=5)

    async def ready_again() -> bool:
        return (await service.get("/health/ready")).status_code == 200

    await _eventually(ready_again)


async def test_workers_stop_when_the_primary_is_killed(start_service: Any) -> None:
    service = await start_service(workers=2)
    [pid] = service.worker_pids()
    service.proc.kill()  # SIGKILL: no chance to stop its workers itself

    async def gone() -> bool:
        return not _alive(pid)

    await _eventually(gone, within=15)
    assert any(r["message"] == "primary process gone, stopping" and r["worker"] == 1
               for r in service.records())
