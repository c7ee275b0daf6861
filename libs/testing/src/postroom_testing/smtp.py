"""An SMTP sink for tests (the relay the mailer sends to, in its own and the end-to-end tests):
a real aiosmtpd server on a free port, in a thread, that records what it accepts and answers
DATA as the test scripts it (451, 550, 250...)."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from postroom_testing.procs import free_port, until


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> Any:
        return BytesParser(policy=policy.default).parsebytes(self.data)

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])


@dataclass
class Handler:
    replies: list[str] = field(default_factory=list)  # for the next DATA commands, in order
    default: str = "250 2.0.0 Ok: queued"
    refuse_rcpt: dict[str, str] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    attempts: int = 0  # DATA commands seen
    auth: list[str] = field(default_factory=list)
    delay: float = 0.0  # a slow relay: seconds before answering DATA
    hold: threading.Event = field(default_factory=threading.Event)  # set: DATA waits
    in_data: int = 0  # DATA commands waiting for their reply
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _wait_release(self) -> None:
        while self.hold.is_set():
            time.sleep(0.01)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        if address in self.refuse_rcpt:
            return self.refuse_rcpt[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.in_data += 1
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.hold.is_set():  # the message is here; the reply waits
                await asyncio.to_thread(self._wait_release)
        finally:
            with self.lock:
                self.in_data -= 1
        with self.lock:
            self.attempts += 1
            reply = self.replies.pop(0) if self.replies else self.default
            if reply.startswith("250"):
                self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                              bytes(envelope.original_content
                                                    or envelope.content)))
        return reply


class Sink:
    """``start()`` / ``stop()`` may be called again: the port stays the same."""

    def __init__(self, *, port: int | None = None, implicit_tls: ssl.SSLContext | None = None,
                 starttls: ssl.SSLContext | None = None,
                 credentials: tuple[str, str] | None = None) -> None:
        self.handler = Handler()
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.implicit_tls = implicit_tls
        self.starttls = starttls
        self.credentials = credentials
        self.controller: Controller | None = None

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and self.credentials is not None
              and (auth_data.login.decode(), auth_data.password.decode()) == self.credentials)
        if ok:
            self.handler.auth.append(auth_data.login.decode())
        return AuthResult(success=ok)

    def start(self) -> Sink:
        kwargs: dict[str, Any] = {"hostname": self.host, "port": self.port,
                                  "data_size_limit": 50 * 1024 * 1024,
                                  "decode_data": False}
        if self.implicit_tls is not None:
            kwargs["ssl_context"] = self.implicit_tls
        if self.starttls is not None:
            kwargs["tls_context"] = self.starttls
            kwargs["require_starttls"] = True
        if self.credentials is not None:
            kwargs["authenticator"] = self._authenticate
            kwargs["auth_required"] = True
            # aiosmtpd counts only STARTTLS as TLS here (not a connection that began with it)
            kwargs["auth_require_tls"] = self.starttls is not None
        self.controller = Controller(self.handler, **kwargs)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def url(self) -> str:
        scheme = "smtps" if self.implicit_tls else ("smtp+starttls" if self.starttls else "smtp")
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def snapshot(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def message_ids(self) -> Counter[str]:
        with self.handler.lock:
            return Counter(r.message_id for r in self.handler.received)

    async def wait_for(self, count: int, within: float = 60.0) -> None:
        await until(lambda: len(self.handler.received) >= count, within=within)

