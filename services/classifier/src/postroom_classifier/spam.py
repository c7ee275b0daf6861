"""SpamAssassin through spamd (``aiospamc``): one optional check per mail.

spamd is an extra opinion, never a dependency: a spamd that is down, slow or answers
nonsense makes the check return ``None`` (the mail is classified by the model alone) and is
counted and logged by the caller; it never fails a message and is not a readiness check.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiospamc
from aiospamc.connections import Timeout
from aiospamc.exceptions import (
    AIOSpamcConnectionFailed,
    ClientException,
    ParseError,
    TimeoutException,
)
from aiospamc.responses import ResponseException
from loguru import logger

# aiospamc logs every request through loguru to stderr, outside the service's JSON logs; the
# service logs what matters (a failed check) itself
logger.disable("aiospamc")


@dataclass(frozen=True)
class SpamdAddress:
    host: str | None = None
    port: int = 783
    socket_path: Path | None = None

    @classmethod
    def parse(cls, url: str) -> SpamdAddress:
        """``host:port``, ``tcp://host:port`` (also ``spamd://``) or ``unix:///path``."""
        if url.startswith("unix://"):
            return cls(socket_path=Path(url.removeprefix("unix://")))
        if "://" not in url:
            url = f"tcp://{url}"
        parts = urlsplit(url)
        if parts.scheme not in ("tcp", "spamd") or not parts.hostname:
            raise ValueError(f"spamd address {url!r}: expected host:port, tcp://host:port or "
                             "unix:///path")
        return cls(host=parts.hostname, port=parts.port or 783)

    def __str__(self) -> str:
        return f"unix://{self.socket_path}" if self.socket_path else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class SpamVerdict:
    score: float
    required: float  # spamd's required score (its own threshold)
    spam: bool  # spamd's verdict
    seconds: float


class SpamdUnavailable(Exception):
    """spamd could not be asked (refused, timed out, answered something else); ``reason`` is
    the metric label: ``unreachable``, ``timeout`` or ``error``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class Spamd:
    def __init__(self, address: SpamdAddress, timeout: float) -> None:
        self.address = address
        self.timeout = timeout

    async def check(self, message: bytes) -> SpamVerdict:
        started = time.perf_counter()
        try:
            # aiospamc's own timeout bounds connect and answer; wait_for bounds everything
            # else (a half-open connection, a slow close)
            response = await asyncio.wait_for(aiospamc.check(
                message, host=self.address.host or "localhost", port=self.address.port,
                socket_path=self.address.socket_path,
                timeout=Timeout(total=self.timeout, connection=self.timeout,
                                response=self.timeout)), self.timeout + 1)
        except (TimeoutError, TimeoutException) as exc:
            raise SpamdUnavailable("timeout", f"no answer within {self.timeout} s") from exc
        except AIOSpamcConnectionFailed as exc:
            raise SpamdUnavailable("unreachable", str(exc) or type(exc).__name__) from exc
        except (OSError, ClientException, ParseError, ResponseException) as exc:
            raise SpamdUnavailable("error", str(exc) or type(exc).__name__) from exc
        spam = response.headers.spam
        if spam is None:
            raise SpamdUnavailable("error", "spamd's answer has no Spam header")
        return SpamVerdict(score=float(spam.score), required=float(spam.threshold),
                           spam=bool(spam.value), seconds=time.perf_counter() - started)
