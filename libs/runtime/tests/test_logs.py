"""Log lines are JSON with service, trace id and mail key, whatever library emits them."""

from __future__ import annotations

import io
import json
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider

from postroom_runtime.logs import mail_key_var, setup_logging


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    setup_logging("test-svc", "INFO")
    yield stream
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_lines_carry_service_trace_id_and_mail_key(captured: io.StringIO) -> None:
    tracer = TracerProvider().get_tracer("t")
    token = mail_key_var.set("k" * 32)
    try:
        with tracer.start_as_current_span("work") as span:
            logging.getLogger("postroom.test").info("handled", extra={"attempt": 2})
    finally:
        mail_key_var.reset(token)
    [line] = lines(captured)
    assert line["message"] == "handled" and line["level"] == "INFO"
    assert line["service"] == "test-svc" and line["attempt"] == 2
    assert line["mail_key"] == "k" * 32
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")


def test_faststream_and_uvicorn_lines_are_json_too(captured: io.StringIO) -> None:
    logging.getLogger("faststream").warning("subscriber task restarted")
    logging.getLogger("uvicorn.error").info("Started", extra={"color_message": "\x1b[36mx"})
    out = lines(captured)
    assert [line["message"] for line in out] == ["subscriber task restarted", "Started"]
    assert all("color_message" not in line for line in out)
