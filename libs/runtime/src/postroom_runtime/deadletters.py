"""Listing and replaying dead letters (used by the CLI and tests)."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from postroom_contracts import DLQ_STREAM, DeadLetter

from .jetstream import MSG_ID


@dataclass
class StoredLetter:
    sequence: int
    letter: DeadLetter


async def list_dead_letters(
    js: JetStreamContext, consumer: str | None = None
) -> list[StoredLetter]:
    try:
        info = await js.stream_info(DLQ_STREAM)
    except NotFoundError:
        return []
    out: list[StoredLetter] = []
    if info.state.messages == 0:
        return out
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            raw = await js.get_msg(DLQ_STREAM, seq)
        except NotFoundError:
            continue
        letter = DeadLetter.model_validate_json(raw.data or b"{}")
        if consumer is None or letter.consumer == consumer:
            out.append(StoredLetter(seq, letter))
    return out


async def replay_dead_letter(js: JetStreamContext, sequence: int) -> DeadLetter:
    """Publish the original message again and remove it from the dead letters.

    The original ``Nats-Msg-Id`` is replaced so the stream's duplicate window does not swallow
    the replay; the consumer's idempotency table still holds nothing for it (it never succeeded).
    """
    raw = await js.get_msg(DLQ_STREAM, sequence)
    letter = DeadLetter.model_validate_json(raw.data or b"{}")
    headers = dict(letter.headers)
    headers[MSG_ID] = f"replay:{sequence}:{letter.original_msg_id or ''}"
    await js.publish(letter.original_subject, base64.b64decode(letter.payload_b64),
                     headers=headers)
    await js.delete_msg(DLQ_STREAM, sequence)
    return letter
