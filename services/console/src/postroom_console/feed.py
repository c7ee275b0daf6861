"""The live feed: one in-process broadcaster, a bounded queue per WebSocket client.

The projector hands every committed batch over; each message is encoded once, and each
client's queue gets the (sequence, text) of the messages its key may see. A client that falls
``CONSOLE_WS_QUEUE`` messages behind is sent ``resync`` and dropped: a slow client never holds
up the projection or the other clients.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from .handlers import Batch, feed_message

RESYNC: dict[str, Any] = {"type": "resync"}
Item = tuple[int, str] | dict[str, Any]  # (sequence, JSON text), or RESYNC


@dataclass(eq=False)
class Client:
    tenant: str | None  # None: admin, every tenant
    queue: asyncio.Queue[Item] = field(default_factory=asyncio.Queue)
    overflowed: bool = False


class Broadcaster:
    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self.clients: set[Client] = set()

    def connect(self, tenant: str | None) -> Client:
        client = Client(tenant, asyncio.Queue(maxsize=self.queue_size + 1))
        self.clients.add(client)
        return client

    def disconnect(self, client: Client) -> None:
        self.clients.discard(client)

    def send(self, messages: list[tuple[str, int, str]]) -> None:
        """(tenant, sequence, JSON text), in order, to every client allowed to see them."""
        for client in list(self.clients):
            for tenant, sequence, text in messages:
                if client.tenant is not None and client.tenant != tenant:
                    continue
                if client.queue.qsize() >= self.queue_size:
                    self._overflow(client)
                    break
                client.queue.put_nowait((sequence, text))

    def _overflow(self, client: Client) -> None:
        client.overflowed = True
        while not client.queue.empty():
            client.queue.get_nowait()
        client.queue.put_nowait(RESYNC)
        self.clients.discard(client)

    def resync_all(self) -> None:
        """After a rebuild: every client reloads."""
        for client in list(self.clients):
            self._overflow(client)

    async def on_applied(self, batch: Batch) -> None:
        if not self.clients:
            return
        self.send([(row["tenant"], row["sequence"], json.dumps(feed_message(row, mail)))
                   for row, mail in batch.applied])
