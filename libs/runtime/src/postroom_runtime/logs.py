"""JSON logs carrying the trace id and the mail key; never addresses, subjects or bodies."""

from __future__ import annotations

import contextvars
import logging
import sys

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

mail_key_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("mail_key", default=None)


class _ContextFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        record.__dict__.pop("color_message", None)  # uvicorn's ANSI-coloured duplicate
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            record.trace_id = format(span.trace_id, "032x")
            record.span_id = format(span.span_id, "016x")
        if not hasattr(record, "mail_key"):
            key = mail_key_var.get()
            if key:
                record.mail_key = key
        return True


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(_ContextFilter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access", "mail.log", "nats"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # FastStream's own module logger prints coloured text through a private handler and does
    # not propagate: route it through ours so every line is JSON
    import faststream._internal.logger.logging  # noqa: F401  (creates the logger)

    faststream_logger = logging.getLogger("faststream")
    faststream_logger.handlers.clear()
    faststream_logger.propagate = True
    faststream_logger.setLevel(max(logging.WARNING, root.level))
