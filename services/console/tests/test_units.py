"""Pure parts: the live feed's overflow rule, the projection's rules on odd input, cursors,
keys, HTML sanitising."""

from __future__ import annotations

import json

import pytest

from postroom_console.api import percentile, sanitized_html
from postroom_console.auth import hash_secret, new_key, split_key
from postroom_console.feed import RESYNC, Broadcaster
from postroom_console.handlers import Batch, Incoming, apply, decode_cursor, encode_cursor


def test_a_slow_client_is_told_to_resync_and_dropped_the_others_are_not_held_up() -> None:
    feed = Broadcaster(queue_size=3)
    slow, fast, other_tenant = feed.connect(None), feed.connect("acme"), feed.connect("globex")
    for seq in range(1, 5):
        feed.send([("acme", seq, f"m{seq}")])
        while not fast.queue.empty():  # the fast client keeps up
            assert fast.queue.get_nowait() == (seq, f"m{seq}")
    assert slow.overflowed and slow not in feed.clients
    assert slow.queue.get_nowait() == RESYNC and slow.queue.empty()
    assert not fast.overflowed and fast in feed.clients
    assert other_tenant.queue.empty() and other_tenant in feed.clients


def msg(seq: int, payload: object, event_type: str = "mail.classified") -> Incoming:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Incoming(seq, f"postroom.{event_type}.acme",
                    {"Postroom-Event-Type": event_type, "Postroom-Mail-Key": "k" * 10}, data)


def test_events_that_cannot_be_applied_are_recorded_and_change_nothing() -> None:
    batch = Batch()
    assert apply(batch, msg(1, b"{nope")) is not None
    assert apply(batch, msg(2, [1, 2])) is not None
    assert "invalid mail.classified" in str(apply(batch, msg(3, {
        "event_id": "e3", "tenant": "acme", "mail_key": "k" * 10, "classification": 7})))
    assert [f["sequence"] for f in batch.failures] == [1, 2, 3]
    assert batch.mails == {} and batch.last_sequence == 3
    # the invalid but readable one is still in the timeline
    assert [t["sequence"] for t in batch.timeline] == [3]
    # a later revision's unknown fields and an unknown type: timeline, no failure
    assert apply(batch, msg(4, {"event_id": "e4", "tenant": "acme", "mail_key": "k" * 10,
                                "occurred_at": "2026-11-01T10:00:00Z"}, "reply.sent")) is None
    assert batch.mails["k" * 10]["status"] == "received"
    # the same event id again: skipped
    assert apply(batch, msg(5, {"event_id": "e4", "tenant": "acme", "mail_key": "k" * 10},
                            "reply.sent")) is None
    assert [t["sequence"] for t in batch.timeline] == [3, 4]


def test_cursors_and_keys() -> None:
    cursor = encode_cursor("2026-11-01T10:00:00+00:00", "abc")
    assert decode_cursor(cursor) == ["2026-11-01T10:00:00+00:00", "abc"]
    with pytest.raises(ValueError):
        decode_cursor("!!!")
    key_id, key = new_key()
    assert split_key(key) == (key_id, key.split("_", 2)[2])
    own_id, secret = split_key("any admin string")
    assert secret == "any admin string" and len(own_id) == 12
    assert hash_secret("x") != hash_secret("y")
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 99) == 4.0
    assert percentile([], 50) is None


def test_html_is_sanitised_and_remote_images_removed() -> None:
    raw = (b"From: a@b.example\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/html; charset=utf-8\r\n\r\n"
           b"<p style=\"background:url(https://t.example/x)\">Hi</p>"
           b"<img src=\"http://t.example/p.gif\"><img srcset=\"https://t.example/a 1x\">"
           b"<img src=\"data:image/png;base64,iVBORw0KGgo=\">"
           b"<form action=\"https://evil.example\"><input name=q></form>"
           b"<iframe src=\"https://evil.example\"></iframe><a href=\"javascript:alert(1)\">x</a>")
    html = sanitized_html(raw)
    assert html is not None
    assert "t.example" not in html and "evil.example" not in html
    assert "javascript" not in html and "<form" not in html and "<iframe" not in html
    assert '<img src="data:image/png;base64,iVBORw0KGgo=">' in html
    assert "<p>Hi</p>" in html
    assert sanitized_html(b"Subject: plain\r\n\r\ntext only") is None
