"""LocalBackend without a model: a draft whose caller gives up (the service stopping) stops
its worker thread at the next token (it streamed on until its deadline, and closing the
backend waited for it with the event loop blocked)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from postroom_ai_responder.backends import LocalBackend, Request
from postroom_ai_responder.prompt import Prompt


class EndlessModel:
    """Streams one token every 10 ms for as long as it is read."""

    n_tokens = 0

    def __init__(self) -> None:
        self.generating = threading.Event()
        self.stopped = threading.Event()

    def create_chat_completion(self, **_: Any) -> Any:
        def chunks() -> Any:
            self.generating.set()
            try:
                while True:
                    time.sleep(0.01)
                    yield {"choices": [{"delta": {"content": "x"}}]}
            finally:
                self.stopped.set()

        return chunks()


async def test_a_cancelled_draft_stops_its_thread() -> None:
    backend = LocalBackend(None)
    model = EndlessModel()
    backend.llama = model
    request = Request(prompt=Prompt(system="s", user="u"), sender="a@b.example", subject="s",
                      thread_id="t", max_tokens=10_000, temperature=0.3)
    draft = asyncio.create_task(backend.generate(request, time_limit=3600))
    assert await asyncio.to_thread(model.generating.wait, 60)
    draft.cancel()
    await asyncio.wait({draft})
    assert draft.cancelled()
    # without the stop the thread would stream on for an hour and close() would wait for it
    assert await asyncio.to_thread(model.stopped.wait, 60)
    await asyncio.wait_for(backend.close(), 60)
