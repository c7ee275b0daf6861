"""The Replies page: drafts awaiting a decision, held ones highlighted with their reasons; the
review panel edits and approves one, the console publishes reply.reviewed, and the delivery
that follows (published here as ai-responder and the mailer publish it) shows on the mail.
The Mailboxes page without mailbox-sync configured."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from console_harness import ADMIN_KEY, Bus, Console, FakeMailboxSync, draft_reply
from dashboard_helpers import sign_in
from playwright.async_api import Page, expect

from postroom_contracts import (
    EVENTS_STREAM,
    DeliveryRequested,
    DeliverySent,
    ReplyReviewed,
    reply_id_for,
)
from postroom_testing.procs import until


async def reviewed_in_stream(bus: Bus) -> ReplyReviewed | None:
    for seq in range(1, await bus.stream_last() + 1):
        msg = await bus.js.get_msg(EVENTS_STREAM, seq)
        if msg.subject.startswith("postroom.reply.reviewed."):
            return ReplyReviewed.model_validate(json.loads(msg.data))
    return None


async def test_a_held_draft_is_edited_approved_and_its_delivery_shown(
        console: Console, bus: Bus, page: Page, screenshot: Callable[..., Any]) -> None:
    calm = await bus.mail(subject="Wann kommt meine Bestellung?", label="support", stages=5)
    urgent = await bus.mail(subject="I want my money back", label="support", stages=5)
    await draft_reply(bus, calm, draft_text="Ihre Bestellung kommt am Freitag.")
    await draft_reply(bus, urgent, status="held",
                      held_reasons=("promises a refund", "mentions an amount"),
                      draft_text="We refund 120 EUR today.")
    await console.caught_up(bus)
    await sign_in(page, console.url, ADMIN_KEY)
    await page.click('#nav a[data-route="replies"]')
    rows = page.locator("#replies-table tbody tr[data-reply-id]")
    await expect(rows).to_have_count(2)
    held_id = reply_id_for("acme", urgent.mail_key)
    held_row = page.locator(f'#replies-table tr[data-reply-id="{held_id}"]')
    await expect(held_row).to_have_class("held")
    await expect(held_row.locator(".held-reasons li")).to_have_text(
        ["promises a refund", "mentions an amount"])
    await screenshot(page, "replies-awaiting")

    await held_row.click()
    panel = page.locator("#review")
    await expect(panel.locator(".held-box")).to_contain_text("promises a refund")
    await expect(page.locator("#review-text")).to_have_value("We refund 120 EUR today.")
    await page.fill("#review-text", "We are checking your order and will answer tomorrow.")
    await screenshot(page, "replies-review")
    await page.click("#review-approve")
    await expect(page.locator("#review-result")).to_contain_text("Approved")
    # once projected, the draft leaves the list of those awaiting a decision
    await expect(held_row).to_have_count(0)
    await expect(rows).to_have_count(1)

    reviewed = await until(lambda: reviewed_in_stream(bus), 60, what="reply.reviewed")
    assert reviewed.reply_id == held_id and reviewed.decision == "approved"
    assert reviewed.reviewed_by == "admin"
    assert reviewed.body_text == "We are checking your order and will answer tomorrow."

    # ai-responder sends the approved reply, the mailer delivers it
    requested = DeliveryRequested.caused_by(
        reviewed, delivery_id=f"reply-{held_id}", kind="reply", to=[urgent.sender],
        subject="Re: I want my money back", from_address="support@acme.example",
        body_text=reviewed.body_text, in_reply_to=urgent.message_id)
    await bus.publish(requested)
    await bus.publish(DeliverySent.caused_by(
        requested, delivery_id=requested.delivery_id, kind="reply",
        message_id="<reply-1@acme.example>", to=[urgent.sender], relay="127.0.0.1:2525",
        smtp_response="250 OK", attempts=1))
    await page.goto(f"{console.url}/#/mails/{urgent.mail_key}")
    await expect(page.locator("#deliveries-table tbody tr .status")).to_have_text("sent")
    reply = page.locator(f'#replies .reply[data-reply-id="{held_id}"]')
    await expect(reply).to_have_attribute("data-status", "approved")
    await expect(reply.locator("pre.draft-text")).to_have_text(
        "We are checking your order and will answer tomorrow.")
    events = page.locator("#timeline li[data-event-type]")
    await expect(page.locator('#timeline li[data-event-type="reply.reviewed"]')).to_have_count(1)
    # the timeline shows the draft as written and the text as approved
    await expect(page.locator('#timeline li[data-event-type="reply.drafted"] .tl-draft')
                 ).to_have_text("We refund 120 EUR today.")
    await expect(page.locator('#timeline li[data-event-type="reply.reviewed"] .tl-draft')
                 ).to_have_text("We are checking your order and will answer tomorrow.")
    await expect(page.locator('#timeline li[data-event-type="reply.drafted"] .tl-summary')
                 ).to_contain_text("held: promises a refund; mentions an amount")
    assert (await events.evaluate_all("items => items.map(li => li.dataset.eventType)"))[-4:] \
        == ["reply.drafted", "reply.reviewed", "delivery.requested", "delivery.sent"]
    await screenshot(page, "reply-delivered", full_page=True)


async def test_the_mailboxes_page_says_when_mailbox_sync_is_not_configured(
        console: Console, page: Page) -> None:
    await sign_in(page, console.url, ADMIN_KEY)
    await page.click('#nav a[data-route="mailboxes"]')
    await expect(page.locator("#mailboxes-not-configured")).to_contain_text("not configured")


async def test_the_mailboxes_page_shows_mailbox_syncs_accounts(
        start_console: Any, mailbox_sync: FakeMailboxSync, page: Page,
        screenshot: Callable[..., Any]) -> None:
    console = await start_console(CONSOLE_MAILBOX_SYNC_URL=mailbox_sync.url,
                                  CONSOLE_MAILBOX_SYNC_TOKEN="sync-token")
    await sign_in(page, console.url, ADMIN_KEY)
    await page.click('#nav a[data-route="mailboxes"]')
    ok = page.locator('#mailboxes-table tr[data-account-id="acme-support"]')
    await expect(ok.locator(".sync-state")).to_have_text("ok")
    await expect(ok).to_contain_text("support@acme.example")
    failing = page.locator('#mailboxes-table tr[data-account-id="globex-info"]')
    await expect(failing).to_have_class("warn")
    await expect(failing).to_contain_text("login failed")
    await screenshot(page, "mailboxes")
