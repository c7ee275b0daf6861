#!/usr/bin/env python
"""The NATS part of one accepted mail, alone: how many (KV put of the raw MIME, event publish)
pairs per second a fresh nats-server with ``sync_interval: always`` acknowledges on this machine.

smtp-ingress waits for both acks before its 250, one after the other, so this is the ceiling
of ingest on this machine whatever the service does (no SMTP, no store, no client CPU here).

    .venv/bin/python scripts/bench_nats_writes.py                 # 10 and 25 in flight
    .venv/bin/python scripts/bench_nats_writes.py --pairs 8000 --concurrency 50
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path


async def measure(pairs: int, concurrency: int, size: int) -> tuple[float, float]:
    import nats
    from nats.js.api import KeyValueConfig, StorageType, StreamConfig

    from postroom_testing.nats import NatsServer

    workdir = Path(tempfile.mkdtemp(prefix="bench-nats-"))
    server = NatsServer(workdir / "nats", sync_always=True)
    server.start()
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        kv = await js.create_key_value(
            KeyValueConfig(bucket="blobs-small", history=1, storage=StorageType.FILE)
        )
        await js.add_stream(
            StreamConfig(name="EVENTS", subjects=["ev.>"], storage=StorageType.FILE)
        )
        raw, event = os.urandom(size), b"e" * 600
        todo = iter(range(pairs))
        latencies: list[float] = []

        async def session() -> None:
            for i in todo:
                started = time.perf_counter()
                await kv.put(f"sha256/{i:064x}", raw)
                await js.publish(f"ev.mail.{i % 7}", event, headers={"Nats-Msg-Id": str(i)})
                latencies.append(time.perf_counter() - started)

        t0 = time.perf_counter()
        await asyncio.gather(*(session() for _ in range(concurrency)))
        seconds = time.perf_counter() - t0
        await nc.close()
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    latencies.sort()
    return pairs / seconds, latencies[len(latencies) // 2] * 1000


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=5000)
    p.add_argument("--concurrency", type=int, action="append", help="default: 10 and 25")
    p.add_argument("--size", type=int, default=4096, help="raw MIME bytes (default 4096)")
    args = p.parse_args()
    for concurrency in args.concurrency or [10, 25]:
        rate, p50 = asyncio.run(measure(args.pairs, concurrency, args.size))
        print(f"{concurrency:3d} in flight: {rate:7.0f} pairs/s, p50 {p50:6.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
