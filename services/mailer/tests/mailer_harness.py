"""A running mailer process and the NATS client the tests drive it with."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import nats

from postroom_contracts import BlobRef, DeliveryRequested
from postroom_runtime import MSG_ID, NatsBlobStore, event_headers
from postroom_runtime.deadletters import StoredLetter, list_dead_letters
from postroom_testing.procs import ManagedProcess, until

CONSUMER = "mailer-delivery-requested"


async def until_async(predicate: Callable[[], Any], within: float = 60.0) -> Any:
    """Poll an async predicate until it returns something true; return that."""
    return await until(predicate, within, interval=0.05)


class Harness:
    """A running mailer process plus a NATS client that publishes requests and collects the
    delivery.sent / delivery.failed events."""

    def __init__(self, proc: ManagedProcess, nats_url: str, http_port: int,
                 database_url: str) -> None:
        self.proc = proc
        self.nats_url = nats_url
        self.http_port = http_port
        self.database_url = database_url
        self.events: list[dict[str, Any]] = []
        self.nc: Any = None

    async def connect(self) -> None:
        self.nc = await nats.connect(self.nats_url)
        self.js = self.nc.jetstream()
        self.blobs = NatsBlobStore(self.js, "postroom-blobs", 1)

        async def collect(msg: Any) -> None:
            self.events.append({"subject": msg.subject, **json.loads(msg.data)})

        await self.js.subscribe("postroom.delivery.sent.>", cb=collect, ordered_consumer=True)
        await self.js.subscribe("postroom.delivery.failed.>", cb=collect,
                                ordered_consumer=True)

    async def put(self, raw: bytes) -> BlobRef:
        return await self.blobs.put(raw, content_type="message/rfc822")

    async def request(self, event: DeliveryRequested, *, msg_id: str | None = None) -> None:
        headers = event_headers(event)
        if msg_id is not None:
            headers[MSG_ID] = msg_id
        await self.js.publish(event.nats_subject, event.model_dump_json().encode(),
                              headers=headers)

    def of(self, event_type: str, delivery_id: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events if e["subject"].startswith(f"postroom.{event_type}.")
                and (delivery_id is None or e["delivery_id"] == delivery_id)]

    async def wait_event(self, event_type: str, delivery_id: str, within: float = 60.0
                         ) -> dict[str, Any]:
        await until(lambda: self.of(event_type, delivery_id), within=within)
        return self.of(event_type, delivery_id)[0]

    async def dead_letters(self) -> list[StoredLetter]:
        return await list_dead_letters(self.js, CONSUMER)

    async def get(self, path: str) -> Any:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.http_port}") as c:
            response = await c.get(path, timeout=10)
        return response

    async def metric(self, name: str, labels: str = "") -> float:
        text = (await self.get("/metrics")).text
        for line in text.splitlines():
            if line.startswith(f"{name}{labels} ") or line.startswith(f"{name}{{{labels}}} "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()
