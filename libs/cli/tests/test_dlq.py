"""`postroom dlq list|replay` against a real nats-server with the provisioned streams."""

from __future__ import annotations

import base64
import json

import pytest
from nats.js import JetStreamContext

from postroom_contracts import EVENTS_STREAM, DeadLetter, dlq_subject
from postroom_runtime.deadletters import list_dead_letters
from postroom_runtime.jetstream import provision_streams

ORIGINAL_SUBJECT = "postroom.mail.received.acme"


def letter(consumer: str, payload: dict[str, object], error: str = "boom") -> DeadLetter:
    return DeadLetter(
        consumer=consumer,
        original_subject=ORIGINAL_SUBJECT,
        original_msg_id=f"msg-{payload['n']}",
        stream_sequence=7,
        deliveries=5,
        error=error,
        payload_b64=base64.b64encode(json.dumps(payload).encode()).decode(),
        headers={"Postroom-Event-Type": "mail.received"},
        mail_key="0123456789abcdef",
    )


@pytest.fixture
def dead_letters(with_js):
    """Publishes two letters for consumer x and one for y into the DLQ stream."""

    async def setup(js: JetStreamContext) -> list[int]:
        await provision_streams(js)
        seqs = []
        for consumer, n in (("x", 1), ("x", 2), ("y", 3)):
            ack = await js.publish(dlq_subject(consumer),
                                   letter(consumer, {"n": n}, f"error {n}").model_dump_json()
                                   .encode())
            seqs.append(ack.seq)
        return seqs

    return with_js(setup)


def events_on(with_js, subject: str) -> list[tuple[bytes, dict[str, str]]]:
    async def read(js: JetStreamContext) -> list[tuple[bytes, dict[str, str]]]:
        info = await js.stream_info(EVENTS_STREAM)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(EVENTS_STREAM, seq)
            if msg.subject == subject:
                out.append((msg.data or b"", dict(msg.headers or {})))
        return out

    return with_js(read)


def test_list_shows_every_dead_letter(cli, nats_url, dead_letters) -> None:
    result = cli("dlq", "list", nats_url=nats_url)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].split()[:4] == ["SEQ", "CONSUMER", "SUBJECT", "DELIVERIES"]
    assert len(lines) == 4
    first = lines[1].split()
    assert first[:4] == [str(dead_letters[0]), "x", ORIGINAL_SUBJECT, "5"]
    assert lines[1].endswith("error 1")

    result = cli("dlq", "list", "--consumer", "y", nats_url=nats_url)
    assert [line.split()[1] for line in result.output.strip().splitlines()[1:]] == ["y"]

    result = cli("dlq", "list", "--json", nats_url=nats_url)
    records = json.loads(result.output)
    assert [r["seq"] for r in records] == dead_letters
    assert records[2]["consumer"] == "y"


def test_replay_publishes_the_original_and_empties_the_dlq(cli, nats_url, with_js,
                                                           dead_letters) -> None:
    result = cli("dlq", "replay", str(dead_letters[0]), nats_url=nats_url)
    assert result.exit_code == 0, result.output
    assert f"replayed #{dead_letters[0]} (x) -> {ORIGINAL_SUBJECT}" in result.output

    replayed = events_on(with_js, ORIGINAL_SUBJECT)
    assert [json.loads(data) for data, _ in replayed] == [{"n": 1}]
    assert replayed[0][1]["Postroom-Event-Type"] == "mail.received"
    remaining = with_js(list_dead_letters)
    assert [s.sequence for s in remaining] == dead_letters[1:]

    result = cli("dlq", "replay", "--all", "--consumer", "x", nats_url=nats_url)
    assert result.exit_code == 0
    assert [json.loads(d) for d, _ in events_on(with_js, ORIGINAL_SUBJECT)] == [{"n": 1}, {"n": 2}]
    assert [s.letter.consumer for s in with_js(list_dead_letters)] == ["y"]

    result = cli("dlq", "replay", "--all", nats_url=nats_url)
    assert result.exit_code == 0
    assert with_js(list_dead_letters) == []
    assert len(events_on(with_js, ORIGINAL_SUBJECT)) == 3

    result = cli("dlq", "list", nats_url=nats_url)
    assert result.output.strip() == "no dead letters"


def test_replay_of_an_unknown_sequence_fails(cli, nats_url, with_js, dead_letters) -> None:
    result = cli("dlq", "replay", "999", str(dead_letters[2]), nats_url=nats_url)
    assert result.exit_code == 1
    assert "#999: no such dead letter" in result.output
    assert f"replayed #{dead_letters[2]}" in result.output  # the good one still went through
    assert len(with_js(list_dead_letters)) == 2


def test_replay_needs_sequences_or_all(cli, nats_url) -> None:
    result = cli("dlq", "replay", nats_url=nats_url)
    assert result.exit_code == 1
    assert "give sequence numbers or --all" in result.output
