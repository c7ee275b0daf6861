"""The projection in each mail's trace: a span per applied event, a child of the span that
published it (the ``traceparent`` of its NATS headers), exported over OTLP to a local
receiver speaking the real protocol; none for events a rebuild reads again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from console_harness import Bus, until
from e2e_stack import OtlpReceiver


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()


async def test_a_span_per_applied_event_in_the_mails_trace(
        bus: Bus, start_console: Any, otlp: OtlpReceiver) -> None:
    console = await start_console(OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint)
    traced = await bus.mail(stages=3)  # mail.received carries a traceparent
    parent = traced.events[0]
    await console.caught_up(bus)

    def mine() -> list[dict[str, Any]] | None:
        spans = [s for s in otlp.snapshot()
                 if s["service"] == "console" and s["trace_id"] == traced.trace_id]
        return spans or None

    spans = await until(mine, "the console's span in the mail's trace")
    assert [s["name"] for s in spans] == ["console project mail.received"]
    assert spans[0]["parent"] == traced.span_id and parent.event_type == "mail.received"
    # the other two events were published without a traceparent: no span, no new trace
    assert {s["trace_id"] for s in otlp.snapshot() if s["service"] == "console"
            and s["name"].startswith("console project")} == {traced.trace_id}

    # a rebuild reads the same events again: no second span for them
    await console.admin("POST", "/api/v1/admin/rebuild")
    await console.caught_up(bus)
    later = await bus.mail(stages=1)
    await console.caught_up(bus)

    def later_traced() -> list[dict[str, Any]] | None:
        return [s for s in otlp.snapshot() if s["trace_id"] == later.trace_id] or None

    await until(later_traced, "the span of the event after the rebuild")
    assert len(mine() or []) == 1
