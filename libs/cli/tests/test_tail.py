"""`postroom tail`: live over core NATS (a real process) and --from-start over the stream."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest
from nats.js import JetStreamContext

from postroom_cli.tail import consumer_filters, is_subset, matches, overlaps, valid_subject
from postroom_runtime.jetstream import provision_streams
from postroom_testing import STARTUP_SECONDS


def test_live_tail_prints_each_event_as_a_json_line_and_stops_after_count(
    cli_process, nats_url
) -> None:
    proc = cli_process("--nats-url", nats_url, "tail", "postroom.document.>", "--count", "2")
    proc.wait_for("tail: postroom.document.> on", stream="stderr", timeout=STARTUP_SECONDS)

    async def publish() -> None:
        nc = await nats.connect(nats_url)
        await nc.publish("postroom.mail.received.acme", b'{"n": 0}')  # not matched
        await nc.publish("postroom.document.stored.acme", b'{"n": 1}',
                         headers={"Postroom-Event-Type": "document.stored"})
        await nc.publish("postroom.document.stored.globex", b"not json")
        await nc.publish("postroom.document.stored.acme", b'{"n": 3}')  # after --count
        await nc.flush()
        await nc.close()

    asyncio.run(publish())
    assert proc.wait(20) == 0
    lines = [json.loads(line) for line in proc.stdout]
    assert lines == [
        {"subject": "postroom.document.stored.acme", "event_type": "document.stored",
         "payload": {"n": 1}},
        {"subject": "postroom.document.stored.globex", "event_type": None,
         "payload": "not json"},
    ]


def test_from_start_reads_the_stream_in_order(cli, nats_url, with_js) -> None:
    async def publish(js: JetStreamContext) -> None:
        await provision_streams(js)
        await js.publish("postroom.mail.received.acme", b'{"n": 1}',
                         headers={"Postroom-Event-Type": "mail.received"})
        await js.publish("postroom.document.stored.acme", b'{"n": 2}',
                         headers={"Postroom-Event-Type": "document.stored"})
        await js.publish("postroom.mail.parsed.acme", b'{"n": 3}',
                         headers={"Postroom-Event-Type": "mail.parsed"})
        await js.publish("postroom.dlq.x", b'{"n": 4}')

    with_js(publish)

    # postroom.> spans both streams: each stream in order, the two interleaved as they come
    result = cli("tail", "--from-start", "--count", "4", nats_url=nats_url)
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["subject"], e["event_type"], e["payload"]) for e in events
            if e["stream"] == "POSTROOM_EVENTS"] == [
        ("postroom.mail.received.acme", "mail.received", {"n": 1}),
        ("postroom.document.stored.acme", "document.stored", {"n": 2}),
        ("postroom.mail.parsed.acme", "mail.parsed", {"n": 3}),
    ]
    assert [(e["stream"], e["seq"]) for e in events if e["stream"] == "POSTROOM_EVENTS"] == [
        ("POSTROOM_EVENTS", 1), ("POSTROOM_EVENTS", 2), ("POSTROOM_EVENTS", 3)]
    assert [(e["subject"], e["payload"]) for e in events if e["stream"] == "POSTROOM_DLQ"] == [
        ("postroom.dlq.x", {"n": 4})]

    result = cli("tail", "postroom.mail.*.acme", "--from-start", "-n", "2", nats_url=nats_url)
    assert [json.loads(line)["payload"] for line in result.stdout.splitlines()] == [
        {"n": 1}, {"n": 3}]

    result = cli("tail", "postroom.dlq.>", "--from-start", "-n", "1", nats_url=nats_url)
    assert [json.loads(line)["stream"] for line in result.stdout.splitlines()] == [
        "POSTROOM_DLQ"]


def test_from_start_without_a_stream_says_so(cli, nats_url, with_js) -> None:
    with_js(provision_streams)
    result = cli("tail", "elsewhere.>", "--from-start", "-n", "1", nats_url=nats_url)
    assert result.exit_code == 1
    assert "no stream stores elsewhere.>" in result.output


def test_an_invalid_subject_is_refused(cli, nats_url) -> None:
    result = cli("tail", "postroom.>.x", nats_url=nats_url)
    assert result.exit_code == 2
    assert "not a NATS subject filter" in result.output


@pytest.mark.parametrize(
    ("a", "b", "overlap", "subset"),
    [
        ("postroom.>", "postroom.mail.>", True, False),
        ("postroom.mail.received.*", "postroom.mail.>", True, True),
        ("postroom.*.*.acme", "postroom.mail.>", True, False),
        ("postroom.dlq.x", "postroom.mail.>", False, False),
        ("postroom.mail", "postroom.mail.>", False, False),
        ("a.b", "a.*", True, True),
        ("a.*", "a.b", True, False),
        ("a.b.c", "a.*", False, False),
    ],
)
def test_subject_algebra(a: str, b: str, overlap: bool, subset: bool) -> None:
    assert overlaps(a, b) is overlap
    assert overlaps(b, a) is overlap
    assert is_subset(a, b) is subset


def test_consumer_filters() -> None:
    events = ["postroom.mail.>", "postroom.document.>", "postroom.reply.>"]
    assert consumer_filters("postroom.mail.received.*", events) == ["postroom.mail.received.*"]
    assert consumer_filters("postroom.>", events) == events
    assert consumer_filters("postroom.*.stored.acme", events) == events
    assert consumer_filters("other.>", events) == []
    assert matches("postroom.mail.received.acme", "postroom.*.*.acme")
    assert not matches("postroom.mail.received.acme", "postroom.*.acme")
    assert valid_subject("postroom.>") and not valid_subject("a..b") and not valid_subject("")
