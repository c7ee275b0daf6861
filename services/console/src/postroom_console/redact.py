"""Secrets in URLs stay out of the logs: ``key=`` and ``ticket=`` query values in what
uvicorn logs (the access log, and the WebSocket handshake line of ``uvicorn.error``) are
replaced by ``[redacted]`` before any handler sees them."""

from __future__ import annotations

import logging
import re

SECRET_PARAMS = re.compile(r"(?i)((?:^|[?&;\s\"'])(?:key|ticket|api_key)=)[^&\s\"';]*")
LOGGERS = ("uvicorn.access", "uvicorn.error", "uvicorn")


def redact(text: str) -> str:
    return SECRET_PARAMS.sub(r"\1[redacted]", text)


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v
                           for k, v in record.args.items()}
        return True


def install() -> None:
    """On uvicorn's loggers (a logger's filter sees the records logged on it)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
