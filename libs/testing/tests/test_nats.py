"""The nats_server fixture runs a real nats-server with JetStream that survives restarts."""

from __future__ import annotations

import json
import time
import urllib.request

import nats
from nats.js.api import StreamConfig

from postroom_testing.nats import NatsServer

STREAM = StreamConfig(name="ORDERS", subjects=["orders.>"])


async def _publish(url: str, count: int, start: int = 0) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(STREAM)
        for i in range(start, start + count):
            ack = await js.publish(
                f"orders.{i}", f"mail-{i}".encode(), headers={"Nats-Msg-Id": f"m{i}"}
            )
            assert ack.stream == "ORDERS"
    finally:
        await nc.close()


async def _read_all(url: str, expected: int) -> list[str]:
    """Consume the ORDERS stream until ``expected`` messages arrived (10 s at most)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        assert (await js.stream_info("ORDERS")).state.messages == expected
        sub = await js.pull_subscribe("orders.>", durable="reader")
        seen: list[str] = []
        deadline = time.monotonic() + 10
        while len(seen) < expected and time.monotonic() < deadline:
            try:
                msgs = await sub.fetch(expected - len(seen), timeout=2)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            for msg in msgs:
                seen.append(msg.data.decode())
                await msg.ack()
        return seen
    finally:
        await nc.close()


async def test_jetstream_publish_and_consume(nats_url: str) -> None:
    assert nats_url.startswith("nats://127.0.0.1:")
    await _publish(nats_url, 20)
    assert await _read_all(nats_url, 20) == [f"mail-{i}" for i in range(20)]


def test_jetstream_fsyncs_every_write(nats_server: NatsServer) -> None:
    with urllib.request.urlopen(f"{nats_server.monitor_url}/jsz?config=true") as resp:
        jsz = json.load(resp)
    assert jsz["config"]["sync_always"] is True
    assert jsz["config"]["store_dir"].startswith(str(nats_server.store_dir))


async def test_graceful_restart_keeps_port_and_stream_data(nats_server: NatsServer) -> None:
    url_before = nats_server.url
    await _publish(nats_server.url, 30)

    assert await nats_server.astop() == 0
    assert not nats_server.is_running
    await nats_server.astart()

    assert nats_server.url == url_before
    assert await _read_all(nats_server.url, 30) == [f"mail-{i}" for i in range(30)]


async def test_kill_then_start_keeps_acknowledged_writes(nats_server: NatsServer) -> None:
    await _publish(nats_server.url, 25)
    assert nats_server.kill() == -9  # SIGKILL: no graceful flush
    nats_server.start()
    await _publish(nats_server.url, 5, start=25)  # stream still there, dedup ids too
    assert await _read_all(nats_server.url, 30) == [f"mail-{i}" for i in range(30)]


async def test_connected_client_reconnects_across_restart(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    try:
        js = nc.jetstream()
        await js.add_stream(STREAM)
        await js.publish("orders.a", b"before")
        await nats_server.astop()
        await nats_server.astart()
        ack = await js.publish("orders.b", b"after", timeout=10)
        assert ack.seq == 2
    finally:
        await nc.close()


def test_each_test_gets_its_own_server(nats_server: NatsServer, tmp_path) -> None:
    other = NatsServer(tmp_path / "other").start()
    try:
        assert other.port != nats_server.port
        assert other.store_dir != nats_server.store_dir
    finally:
        other.stop()
    assert other.returncode == 0
