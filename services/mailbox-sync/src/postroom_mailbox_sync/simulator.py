"""A mail provider with push notifications and incremental history, for tests and demos (the
FakeMail of seed 004, speaking the protocol ``provider.py`` describes, as Gmail's API does).

    python -m postroom_mailbox_sync.simulator --port 8099 --token sim-token

``POST /simulator/send_email`` delivers a mail (``{"to": user, "raw": base64}`` or
``{"to", "from", "subject", "body"}``); the mailbox's history grows by one record and the
watch, if any, is notified (signed). ``POST /simulator/expire_history`` forgets a user's history,
so the next history request from an older id answers 404 (the full-resync case);
``POST /simulator/notifications {"enabled": false}`` drops notifications (a lost push).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from .handlers import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

log = logging.getLogger("postroom_mailbox_sync.simulator")


@dataclass
class SimMailbox:
    messages: dict[str, bytes] = field(default_factory=dict)  # insertion order = arrival
    history: list[tuple[int, str]] = field(default_factory=list)  # (history id, message id)
    next_history_id: int = 1000
    oldest_kept: int = 1000  # history from before this id is gone
    watch: tuple[str, str] | None = None  # (webhook URL, secret)


class ProviderSimulator:
    def __init__(self, token: str = "sim-token", history_page: int = 50) -> None:
        self.token = token
        self.history_page = history_page
        self.users: dict[str, SimMailbox] = {}
        self.notify = True
        self.notifications: list[dict[str, Any]] = []  # sent (for tests)
        self.app = self._build()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self.port: int | None = None

    def mailbox(self, user: str) -> SimMailbox:
        return self.users.setdefault(user, SimMailbox())

    # --- the provider's side ---------------------------------------------------------------

    def deliver(self, user: str, raw: bytes) -> tuple[str, int]:
        box = self.mailbox(user)
        message_id = f"m{len(box.messages) + 1:06d}-{int(time.time() * 1000) % 100000}"
        box.messages[message_id] = raw
        box.next_history_id += 1
        box.history.append((box.next_history_id, message_id))
        if self.notify and box.watch is not None:
            task = asyncio.get_running_loop().create_task(
                self._push(user, box.watch, box.next_history_id))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        return message_id, box.next_history_id

    def expire_history(self, user: str) -> None:
        box = self.mailbox(user)
        box.history.clear()
        box.oldest_kept = box.next_history_id + 1

    async def _push(self, user: str, watch: tuple[str, str], history_id: int) -> None:
        url, secret = watch
        body = json.dumps({"emailAddress": user, "historyId": str(history_id)}).encode()
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp,
                   SIGNATURE_HEADER: sign(secret, timestamp, body)}
        try:
            async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
                response = await client.post(url, content=body, headers=headers)
            self.notifications.append({"user": user, "history_id": history_id,
                                       "status": response.status_code})
        except httpx.HTTPError as exc:  # a lost notification: the receiver catches up later
            self.notifications.append({"user": user, "history_id": history_id,
                                       "error": str(exc)})

    # --- HTTP ---------------------------------------------------------------------------------

    def _build(self) -> FastAPI:
        app = FastAPI(title="Postroom provider simulator")

        def authorized(request: Request) -> bool:
            return request.headers.get("authorization") == f"Bearer {self.token}"

        def denied() -> JSONResponse:
            return JSONResponse({"error": "unauthorized"}, status_code=401)

        @app.get("/users/{user}/profile")
        async def profile(user: str, request: Request) -> Any:
            if not authorized(request):
                return denied()
            box = self.mailbox(user)
            return {"emailAddress": user, "historyId": str(box.next_history_id),
                    "messagesTotal": len(box.messages)}

        @app.get("/users/{user}/history")
        async def history(user: str, request: Request, startHistoryId: int,
                          pageToken: int | None = None) -> Any:
            if not authorized(request):
                return denied()
            box = self.mailbox(user)
            if startHistoryId < box.oldest_kept - 1:
                return JSONResponse({"error": {"code": 404, "message": "Requested entity was "
                                               "not found (history id too old)"}},
                                    status_code=404)
            records = [(h, m) for h, m in box.history if h > startHistoryId]
            start = pageToken or 0
            page = records[start:start + self.history_page]
            body: dict[str, Any] = {
                "history": [{"id": str(h), "messagesAdded": [{"message": {"id": m}}]}
                            for h, m in page],
                "historyId": str(box.next_history_id)}
            if start + self.history_page < len(records):
                body["nextPageToken"] = str(start + self.history_page)
            return body

        @app.get("/users/{user}/messages")
        async def messages(user: str, request: Request, maxResults: int = 100,
                           pageToken: int | None = None) -> Any:
            if not authorized(request):
                return denied()
            ids = list(reversed(self.mailbox(user).messages))  # newest first
            start = pageToken or 0
            body: dict[str, Any] = {"messages": [{"id": i} for i in
                                                 ids[start:start + maxResults]],
                                    "resultSizeEstimate": len(ids)}
            if start + maxResults < len(ids):
                body["nextPageToken"] = str(start + maxResults)
            return body

        @app.get("/users/{user}/messages/{message_id}")
        async def message(user: str, message_id: str, request: Request) -> Any:
            if not authorized(request):
                return denied()
            raw = self.mailbox(user).messages.get(message_id)
            if raw is None:
                return JSONResponse({"error": "not found"}, status_code=404)
            return {"id": message_id,
                    "raw": base64.urlsafe_b64encode(raw).decode().rstrip("=")}

        @app.post("/users/{user}/watch")
        async def watch(user: str, request: Request) -> Any:
            if not authorized(request):
                return denied()
            body = await request.json()
            self.mailbox(user).watch = (body["webhook_url"], body["secret"])
            return {"historyId": str(self.mailbox(user).next_history_id),
                    "expiration": str(int((time.time() + 7 * 86400) * 1000))}

        @app.post("/simulator/send_email")
        async def send_email(request: Request) -> Any:
            body = await request.json()
            if "raw" in body:
                raw = base64.b64decode(body["raw"])
            else:
                raw = (f"From: {body.get('from', 'sender@example.com')}\r\n"
                       f"To: {body['to']}\r\nSubject: {body.get('subject', '')}\r\n"
                       f"Message-ID: {make_msgid(domain='fakemail.example')}\r\n"
                       f"Date: {format_datetime(datetime.now(UTC))}\r\n\r\n"
                       f"{body.get('body', '')}\r\n").encode()
            message_id, history_id = self.deliver(body["to"], raw)
            return {"id": message_id, "historyId": str(history_id)}

        @app.post("/simulator/expire_history")
        async def expire(request: Request) -> Any:
            self.expire_history((await request.json())["user"])
            return {"status": "expired"}

        @app.post("/simulator/notifications")
        async def notifications(request: Request) -> Any:
            self.notify = bool((await request.json())["enabled"])
            return {"enabled": self.notify}

        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> ProviderSimulator:
        config = uvicorn.Config(self.app, host=host, port=port, log_config=None,
                                access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        for task in list(self._pending):
            task.cancel()
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--token", default="sim-token", help="Bearer token the API takes")
    args = parser.parse_args()

    async def serve() -> None:
        sim = await ProviderSimulator(args.token).start(args.host, args.port)
        print(f"provider simulator on {sim.url} (token {args.token})", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
