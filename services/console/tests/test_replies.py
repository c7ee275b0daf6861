"""AI replies in the console (SQLite and PostgreSQL): reply.drafted / reply.reviewed /
reply.skipped projected into ``replies`` (tenant-scoped), listed and shown; a review
publishes reply.reviewed once (a second is 409); the Mailboxes endpoint reads mailbox-sync."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from console_harness import (
    ADMIN_KEY,
    Bus,
    Console,
    FakeMailboxSync,
    draft_reply,
    outbox_empty,
    until,
)

from postroom_contracts import EVENTS_STREAM, ReplyReviewed, ReplySkipped, reply_id_for


async def reviewed_events(bus: Bus) -> list[dict[str, Any]]:
    """reply.reviewed messages in the stream."""
    out = []
    last = await bus.stream_last()
    for seq in range(1, last + 1):
        msg = await bus.js.get_msg(EVENTS_STREAM, seq)
        if msg.subject.startswith("postroom.reply.reviewed."):
            out.append(json.loads(msg.data))
    return out


async def test_drafts_are_listed_reviewed_once_and_their_decision_projected(
        bus: Bus, console: Console, database_url: str) -> None:
    pending = await bus.mail(subject="Where is my order?", label="support", stages=5)
    held = await bus.mail(subject="Refund now", label="support", stages=5)
    other = await bus.mail(tenant="globex", subject="Globex question", label="support", stages=5)
    await draft_reply(bus, pending)
    await draft_reply(bus, held, status="held", held_reasons=("mentions a refund amount",))
    await draft_reply(bus, other)
    skipped = await bus.mail(subject="Newsletter", label="support", stages=5)
    await bus.publish(ReplySkipped.caused_by(skipped.events[-1], reason="loop-guard",
                                             detail="List-Unsubscribe"))
    await console.caught_up(bus)
    acme = await console.tenant_key("acme")
    async with console.client(ADMIN_KEY) as admin, console.client(acme) as tenant:
        awaiting = (await admin.get("/api/v1/replies", params={"status": "awaiting"})).json()
        assert [r["mail_key"] for r in awaiting["items"]] == [
            other.mail_key, held.mail_key, pending.mail_key]
        first = awaiting["items"][1]
        assert first["status"] == "held" and first["reviewable"] is True
        assert first["held_reasons"] == ["mentions a refund amount"]
        assert first["mail"]["subject"] == "Refund now"
        # a tenant key sees its tenant's replies only; another tenant's reply is not found
        mine = (await tenant.get("/api/v1/replies", params={"status": "pending,held"})).json()
        assert {r["tenant"] for r in mine["items"]} == {"acme"}
        assert len(mine["items"]) == 2
        other_id = reply_id_for("globex", other.mail_key)
        assert (await tenant.get(f"/api/v1/replies/{other_id}")).status_code == 404
        assert (await tenant.post(f"/api/v1/replies/{other_id}/review",
                                  json={"decision": "approved"})).status_code == 404
        skipped_rows = (await admin.get("/api/v1/replies", params={"status": "skipped"})).json()
        assert [r["mail_key"] for r in skipped_rows["items"]] == [skipped.mail_key]
        assert skipped_rows["items"][0]["reason"] == "loop-guard: List-Unsubscribe"
        # paging
        page = (await admin.get("/api/v1/replies", params={"limit": 2})).json()
        rest = (await admin.get("/api/v1/replies", params={
            "limit": 2, "cursor": page["next_cursor"]})).json()
        assert len(page["items"]) == 2 and len(rest["items"]) == 2 and rest["next_cursor"] is None

        # approve the held one with an edited text
        reply_id = reply_id_for("acme", held.mail_key)
        detail = (await tenant.get(f"/api/v1/replies/{reply_id}")).json()
        assert detail["draft_text"] == "Thank you, we ship on Friday."
        assert detail["body_text"].startswith("Hello,")
        response = await tenant.post(f"/api/v1/replies/{reply_id}/review", json={
            "decision": "approved", "body_text": "We will refund you within 5 days."})
        assert response.status_code == 202, response.text
        # a second decision: 409, whatever it says, before and after the event is projected
        again = await admin.post(f"/api/v1/replies/{reply_id}/review",
                                 json={"decision": "rejected", "reason": "no"})
        assert again.status_code == 409

        async def decided() -> dict[str, Any] | None:
            got = (await admin.get(f"/api/v1/replies/{reply_id}")).json()
            return got if got["status"] == "approved" else None

        done = await until(decided, "the approval projected")
        assert done["reviewed_by"] == "acme-key" and done["reviewable"] is False
        assert done["edited_text"] == "We will refund you within 5 days."
        assert (await admin.post(f"/api/v1/replies/{reply_id}/review",
                                 json={"decision": "approved"})).status_code == 409
        # reject the pending one
        rejected_id = reply_id_for("acme", pending.mail_key)
        response = await admin.post(f"/api/v1/replies/{rejected_id}/review",
                                    json={"decision": "rejected", "reason": "wrong tone"})
        assert response.status_code == 202
        bad = await admin.post(f"/api/v1/replies/{rejected_id}/review",
                               json={"decision": "maybe"})
        assert bad.status_code == 422

        # the mail's detail: the draft with its text, the decision, in the timeline
        async def in_detail() -> dict[str, Any] | None:
            got = (await admin.get(f"/api/v1/mails/{held.mail_key}")).json()
            types = [e["event_type"] for e in got["timeline"]]
            return got if "reply.reviewed" in types else None

        mail = await until(in_detail, "reply.reviewed in the mail's timeline")
        assert mail["replies"][0]["draft_text"] == "Thank you, we ship on Friday."
        assert mail["replies"][0]["status"] == "approved"
        summaries = {e["event_type"]: e["summary"] for e in mail["timeline"]}
        assert summaries["reply.drafted"] == \
            "reply drafted (held: mentions a refund amount) by reply-test"
        assert summaries["reply.reviewed"] == "reply approved by acme-key, edited"
        skipped_detail = (await admin.get(f"/api/v1/mails/{skipped.mail_key}")).json()
        assert skipped_detail["replies_skipped"][0]["reason"] == "loop-guard"

    # exactly one reply.reviewed per reviewed reply, as the contract has it
    async def both() -> list[dict[str, Any]] | None:
        found = await reviewed_events(bus)
        return found if len(found) == 2 else None

    events = await until(both, "two reply.reviewed in the stream")
    by_id = {e["reply_id"]: ReplyReviewed.model_validate(e) for e in events}
    assert by_id[reply_id].decision == "approved"
    assert by_id[reply_id].body_text == "We will refund you within 5 days."
    assert by_id[rejected_id].reason == "wrong tone"
    assert by_id[rejected_id].body_text is None
    # everything the console committed is published: a third reply.reviewed would be there
    await until(lambda: outbox_empty(database_url), "the console's outbox published")
    assert len(await reviewed_events(bus)) == 2


async def test_a_rebuild_keeps_the_replies_and_the_reviews(bus: Bus, console: Console) -> None:
    mail = await bus.mail(label="support", stages=5)
    await draft_reply(bus, mail)
    await console.caught_up(bus)
    reply_id = reply_id_for("acme", mail.mail_key)
    response = await console.admin("POST", f"/api/v1/replies/{reply_id}/review",
                                   json={"decision": "approved"})
    assert response.status_code == 202

    async def approved() -> bool:
        got = (await console.admin("GET", f"/api/v1/replies/{reply_id}")).json()
        return got["status"] == "approved"

    await until(approved, "the approval projected")
    before = (await console.admin("GET", f"/api/v1/replies/{reply_id}")).json()
    await console.admin("POST", "/api/v1/admin/rebuild")
    await console.caught_up(bus)
    assert (await console.admin("GET", f"/api/v1/replies/{reply_id}")).json() == before
    assert (await console.admin("POST", f"/api/v1/replies/{reply_id}/review",
                                json={"decision": "rejected"})).status_code == 409


async def test_mailboxes_read_from_mailbox_sync(start_console: Any,
                                                mailbox_sync: FakeMailboxSync,
                                                tmp_path: Path) -> None:
    unconfigured = await start_console("console-plain")
    got = (await unconfigured.admin("GET", "/api/v1/mailboxes")).json()
    assert got == {"configured": False, "accounts": []}
    console = await start_console("console-sync", CONSOLE_MAILBOX_SYNC_URL=mailbox_sync.url,
                                  CONSOLE_MAILBOX_SYNC_TOKEN="sync-token")
    got = (await console.admin("GET", "/api/v1/mailboxes")).json()
    assert got["configured"] and got["reachable"]
    assert [a["id"] for a in got["accounts"]] == ["acme-support", "globex-info"]
    acme = await console.tenant_key("acme")
    async with console.client(acme) as http:
        mine = (await http.get("/api/v1/mailboxes")).json()
    assert [a["id"] for a in mine["accounts"]] == ["acme-support"]
    # the embedded stack's way: the token read from the file mailbox-sync keeps it in, which
    # it may write only after the console started
    token_file = tmp_path / "api-token"
    from_file = await start_console("console-sync-file", CONSOLE_MAILBOX_SYNC_URL=mailbox_sync.url,
                                    CONSOLE_MAILBOX_SYNC_TOKEN_FILE=str(token_file))
    assert not (await from_file.admin("GET", "/api/v1/mailboxes")).json()["reachable"]
    token_file.write_text("sync-token\n")
    got = (await from_file.admin("GET", "/api/v1/mailboxes")).json()
    assert got["reachable"] and len(got["accounts"]) == 2
    mailbox_sync.server.shutdown()
    mailbox_sync.server.server_close()
    down = (await console.admin("GET", "/api/v1/mailboxes")).json()
    assert down["configured"] and not down["reachable"] and down["accounts"] == []
