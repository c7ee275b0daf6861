"""The dashboard in Chromium against the console process on a real nats-server: a mail's
events published as the services publish them show up live, its detail shows the journey,
a label correction comes back, a dead letter is replayed with the button, the stats update."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from console_harness import ADMIN_KEY, Bus, Console
from dashboard_helpers import count_loads, sign_in
from e2e_stack import seed
from nats.js.api import AckPolicy, ConsumerConfig
from playwright.async_api import Page, expect

from postroom_contracts import (
    DLQ_STREAM,
    EVENTS_STREAM,
    DeadLetter,
    MailParsed,
    MailReceived,
    ReplyDrafted,
    dlq_subject,
)
from postroom_runtime import event_headers
from postroom_testing.procs import until

ROWS = "#mail-table tbody tr[data-mail-key]"


def row(page: Page, mail_key: str) -> Any:
    return page.locator(f'#mail-table tbody tr[data-mail-key="{mail_key}"]')


async def test_sign_in_refuses_a_bad_key_and_keeps_a_good_one_for_the_tab(
        console: Console, page: Page, screenshot: Callable[..., Any]) -> None:
    await page.goto(f"{console.url}/")
    await expect(page.locator("#signin-key")).to_be_focused()
    await screenshot(page, "signin")
    await page.fill("#signin-key", "pr_000000000000_" + "B" * 32)
    await page.click("#signin-submit")
    await expect(page.locator("#signin-error")).to_have_text(re.compile("not valid"))
    await expect(page.locator("#topbar")).to_be_hidden()

    await page.fill("#signin-key", ADMIN_KEY)
    await page.press("#signin-key", "Enter")
    await expect(page.locator("#who .who-scope")).to_have_text("admin")
    await expect(page.locator("#mail-list-status")).to_have_text("No mail matches these filters.")
    # a reload keeps the session (sessionStorage); signing out forgets it
    await page.reload()
    await expect(page.locator("#mail-table")).to_be_visible()
    await page.click("#signout")
    await expect(page.locator("#signin-key")).to_be_visible()
    await page.reload()
    await expect(page.locator("#signin-key")).to_be_visible()


async def test_a_mail_appears_live_and_its_detail_shows_the_journey(
        console: Console, bus: Bus, page: Page, screenshot: Callable[..., Any],
        tmp_path: Path) -> None:
    older = await bus.mail(subject="Earlier order 41", label="order")
    await console.caught_up(bus)
    await sign_in(page, console.url, ADMIN_KEY)
    await expect(row(page, older.mail_key)).to_be_visible()
    loads = count_loads(page)

    sent = await bus.mail(subject="Bestellung 42 (live)", sender="einkauf@kunde.example",
                          label="order")
    parsed = next(e for e in sent.events if isinstance(e, MailParsed))
    await bus.publish(ReplyDrafted.caused_by(
        parsed, reply_id=f"r-{sent.mail_key}", to=["einkauf@kunde.example"],
        subject="Re: Bestellung 42", body_text="Danke, wir liefern am Freitag.",
        in_reply_to=sent.message_id, model="reply-test"))
    new_row = row(page, sent.mail_key)
    await expect(new_row).to_be_visible()
    await expect(new_row.locator(".label-badge")).to_have_text("order")
    await expect(new_row.locator(".confidence")).to_have_text("93%")
    await expect(new_row.locator("td.col-status")).to_have_text("classified")
    # newest first: the live row went above the one that was there
    assert await page.locator(ROWS).first.get_attribute("data-mail-key") == sent.mail_key
    assert loads == [], "the list must update without a page load"
    await screenshot(page, "mails-live")

    await new_row.locator("a.subject").click()
    await expect(page.locator("#mail-subject")).to_have_text("Bestellung 42 (live)")
    types = [e.event_type for e in sent.events] + ["reply.drafted"]
    await expect(page.locator("#timeline li[data-event-type]")).to_have_count(len(types))
    assert await page.locator("#timeline li[data-event-type]").evaluate_all(
        "items => items.map(li => li.dataset.eventType)") == types
    await expect(page.locator('#timeline li[data-event-type="mail.received"] .tl-since')
                 ).to_have_text("+0 ms")
    await expect(page.locator('#timeline li[data-event-type="mail.classified"] .tl-since')
                 ).to_have_text("+80 ms")
    await expect(page.locator("#trace-id")).to_have_text(sent.trace_id)
    for mechanism in ("spf", "dkim", "dmarc"):
        verdict = page.locator(f'#auth-table tr[data-mechanism="{mechanism}"] .verdict')
        await expect(verdict).to_have_text("pass")
    await expect(page.locator('#scores tr[data-label="order"] td.num')).to_have_text("93%")
    await expect(page.locator("#transcripts .transcript-text")).to_have_text("Please call me back")
    await expect(page.locator("#replies .reply")).to_contain_text("Re: Bestellung 42")
    await expect(page.locator("#replies .reply pre")).to_have_text("Danke, wir liefern am Freitag.")
    await expect(page.locator("#deliveries-table tbody tr")).to_have_count(1)
    await expect(page.locator("#deliveries-table tbody tr .status")).to_have_text("sent")
    await screenshot(page, "detail", full_page=True)

    # the document downloads with the key in a header (a blob saved by the page)
    async with page.expect_download() as info:
        await page.locator(f'#documents button[data-document-id="{sent.document_id}"]').click()
    download = await info.value
    assert download.suggested_filename == "Bestellung 42.pdf"
    saved = tmp_path / "doc.pdf"
    await download.save_as(saved)
    assert saved.read_bytes() == sent.document

    # the HTML body: sanitised by the server, in a sandboxed frame, no script, no remote image
    await page.click('.tab[data-tab="html"]')
    frame = page.frame_locator("#body-html")
    await expect(frame.locator("h1")).to_have_text("Order 42")
    assert await page.locator("#body-html").get_attribute("sandbox") == ""
    await expect(frame.locator("script")).to_have_count(0)
    await expect(frame.locator('img[src^="https:"]')).to_have_count(0)
    assert await frame.locator("h1").get_attribute("onclick") is None

    # Esc goes back to the list, which still has both rows
    await page.keyboard.press("Escape")
    await expect(row(page, sent.mail_key)).to_be_visible()
    await expect(row(page, older.mail_key)).to_be_visible()
    assert loads == []


async def test_a_label_correction_is_sent_and_comes_back(
        console: Console, bus: Bus, page: Page, screenshot: Callable[..., Any]) -> None:
    sent = await bus.mail(subject="Can you help with my invoice?", label="order")
    await console.caught_up(bus)
    await sign_in(page, console.url, ADMIN_KEY)
    await row(page, sent.mail_key).locator("a.subject").click()
    badge = page.locator(".detail-head .label-badge")
    await expect(badge).to_have_attribute("data-label", "order")

    await page.select_option("#correct-label select", "support")
    await page.click("#correct-label button")
    # the correction goes out as mail.label_corrected and comes back through the projection
    await expect(badge).to_have_attribute("data-label", "support")
    await expect(badge).to_have_class(re.compile(r"\bcorrected\b"))
    await expect(page.locator('#timeline li[data-event-type="mail.label_corrected"]')
                 ).to_have_count(1)
    await expect(page.locator("#classification")).to_contain_text("Corrected to “support”.")
    await screenshot(page, "detail-corrected")

    detail = (await console.admin("GET", f"/api/v1/mails/{sent.mail_key}")).json()
    assert detail["corrected_label"] == "support"
    assert detail["label"] == "order"

    await page.keyboard.press("Escape")
    list_badge = row(page, sent.mail_key).locator(".label-badge")
    await expect(list_badge).to_have_attribute("data-label", "support")


async def test_a_dead_letter_is_replayed_with_the_button(
        console: Console, bus: Bus, page: Page, screenshot: Callable[..., Any]) -> None:
    sent = await bus.mail(subject="Order that failed once", stages=1)
    received = sent.events[0]
    assert isinstance(received, MailReceived)
    parsed = MailParsed.caused_by(received, message_id=sent.message_id, subject=sent.subject,
                                  body_text="Order 43, please.")
    letter = DeadLetter(
        consumer="classifier", original_subject=parsed.nats_subject,
        original_msg_id=parsed.event_id, deliveries=5,
        error="RuntimeError: the model could not be loaded", mail_key=sent.mail_key,
        payload_b64=base64.b64encode(parsed.model_dump_json().encode()).decode(),
        headers=event_headers(parsed))
    ack = await bus.js.publish(dlq_subject("classifier"), letter.model_dump_json().encode())

    await sign_in(page, console.url, ADMIN_KEY)
    await page.click('#nav a[data-route="dead-letters"]')
    dlq_row = page.locator(f'#dlq-table tbody tr[data-sequence="{ack.seq}"]')
    await expect(dlq_row).to_contain_text("the model could not be loaded")
    await expect(dlq_row).to_contain_text("classifier")
    await screenshot(page, "dead-letters")

    before = await parsed_count(bus, parsed.nats_subject)
    await dlq_row.locator("button.replay").click()
    await expect(page.locator(f'#dlq-table tbody tr[data-sequence="{ack.seq}"]')).to_have_count(0)
    await expect(page.locator("#dlq-table tbody")).to_contain_text("No dead letters")
    # the original message is back on its subject, the dead letter gone from the stream
    assert await parsed_count(bus, parsed.nats_subject) == before + 1
    assert (await bus.js.stream_info(DLQ_STREAM)).state.messages == 0
    # and the console applied it: the mail's timeline now has its mail.parsed
    await console.caught_up(bus)
    detail = (await console.admin("GET", f"/api/v1/mails/{sent.mail_key}")).json()
    assert [e["event_type"] for e in detail["timeline"]] == ["mail.received", "mail.parsed"]


async def parsed_count(bus: Bus, subject: str) -> int:
    info = await bus.js.stream_info(EVENTS_STREAM, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def test_stats_update_live(console: Console, bus: Bus, page: Page,
                                 screenshot: Callable[..., Any]) -> None:
    # a durable consumer nobody reads from: its pending count is the lag the page shows
    await bus.js.add_consumer(EVENTS_STREAM, ConsumerConfig(
        durable_name="classifier", filter_subject="postroom.mail.parsed.>",
        ack_policy=AckPolicy.EXPLICIT))
    await bus.mail(label="order")
    await console.caught_up(bus)
    await sign_in(page, console.url, ADMIN_KEY)
    await page.click('#nav a[data-route="stats"]')
    await expect(page.locator("#tile-mails .tile-value")).to_have_text("1")
    await expect(page.locator('#stats-labels rect[data-key="order"]')).to_have_attribute(
        "data-value", "1")
    await expect(page.locator("#stats-volume rect.bar")).to_have_count(24)
    lag = page.locator('#consumers-table tr[data-consumer="classifier"] td.num').first
    await expect(lag).to_have_text("1")
    loads = count_loads(page)

    await bus.mail(label="meeting")
    await bus.mail(label="meeting")
    await expect(page.locator("#tile-mails .tile-value")).to_have_text("3")
    await expect(page.locator('#stats-labels rect[data-key="meeting"]')).to_have_attribute(
        "data-value", "2")
    await expect(lag).to_have_text("3")
    assert loads == []
    await screenshot(page, "stats", full_page=True)


async def test_a_tenant_key_sees_only_its_tenant(
        console: Console, bus: Bus, page: Page) -> None:
    ours = await bus.mail(tenant="acme", subject="Our order")
    theirs = await bus.mail(tenant="globex", subject="Their order")
    await console.caught_up(bus)
    key = await console.tenant_key("acme", "acme-ops")
    await sign_in(page, console.url, key)
    await expect(page.locator("#who .who-scope")).to_have_text("acme")
    await expect(row(page, ours.mail_key)).to_be_visible()
    await expect(page.locator(ROWS)).to_have_count(1)
    await expect(page.locator('#nav a[data-route="dead-letters"]')).to_be_hidden()
    await expect(page.locator("#mail-table th.col-tenant")).to_have_count(0)
    # a live mail of the other tenant never shows; one of ours does
    await bus.mail(tenant="globex", subject="Their second order")
    mine = await bus.mail(tenant="acme", subject="Our second order")
    await expect(row(page, mine.mail_key)).to_be_visible()
    await console.caught_up(bus)
    await expect(page.locator(ROWS)).to_have_count(2)
    await page.goto(f"{console.url}/#/mails/{theirs.mail_key}")
    await expect(page.locator(".detail .error")).to_have_text(re.compile("No such mail"))


async def test_the_list_pages_with_a_cursor_and_filters_on_the_server(
        console: Console, bus: Bus, page: Page, screenshot: Callable[..., Any]) -> None:
    for n in range(130):
        await bus.mail(subject=f"Bulk order {n:03d}", label="order" if n % 2 else "promotion",
                       stages=5, voicemail=False)
    await console.caught_up(bus)
    await sign_in(page, console.url, ADMIN_KEY)
    await expect(page.locator(ROWS)).to_have_count(100)  # one page, not everything
    await page.locator(ROWS).nth(99).scroll_into_view_if_needed()
    await expect(page.locator(ROWS)).to_have_count(130)
    await expect(page.locator("#mail-list-status")).to_contain_text("end of list")

    # scrolled down, a new mail goes on top without moving what is on screen; a pill says so
    under = await page.locator(ROWS).nth(120).get_attribute("data-mail-key")
    await page.locator(ROWS).nth(120).scroll_into_view_if_needed()
    box = await page.locator(ROWS).nth(120).bounding_box()
    fresh = await bus.mail(subject="Arrived while scrolled down", stages=5, voicemail=False)
    await expect(page.locator("#new-mails")).to_have_text("↑ 1 new mail")
    assert await page.locator(ROWS).first.get_attribute("data-mail-key") == fresh.mail_key
    after = await page.locator(f'{ROWS}[data-mail-key="{under}"]').bounding_box()
    assert box and after and abs(after["y"] - box["y"]) < 2, (box, after)
    await page.click("#new-mails")
    await expect(page.locator("#new-mails")).to_be_hidden()
    await expect(row(page, fresh.mail_key)).to_be_in_viewport()

    await page.select_option("#filter-label", "promotion")
    await expect(page.locator(ROWS)).to_have_count(65)
    await expect(page.locator(f'{ROWS} .label-badge[data-label="order"]')).to_have_count(0)
    assert "label=promotion" in page.url
    # typing: a pause applies the filter (the URL changes, the list reloads) and the typing
    # goes on in the same field
    await page.locator("#filter-q").press_sequentially("order")
    await expect(page).to_have_url(re.compile(r"q=order(&|$)"))
    await expect(page.locator("#filter-q")).to_be_focused()
    await page.keyboard.type(" 12")
    await expect(page.locator("#filter-q")).to_have_value("order 12")
    await expect(page.locator(ROWS)).to_have_count(5)  # 120, 122, 124, 126, 128
    await screenshot(page, "mails-filtered")

    # keyboard: / focuses the search, j/k move, Enter opens
    await page.click("#mail-table thead")
    await page.keyboard.press("j")
    await page.keyboard.press("j")
    second = await page.locator(ROWS).nth(1).get_attribute("data-mail-key")
    await expect(page.locator(f"{ROWS}.selected")).to_have_attribute("data-mail-key", second)
    await page.keyboard.press("Enter")
    await expect(page.locator(".detail")).to_have_attribute("data-mail-key", second)
    await page.keyboard.press("Escape")
    await expect(page.locator("#filter-q")).to_have_value("order 12")
    await page.keyboard.press("/")
    await expect(page.locator("#filter-q")).to_be_focused()


async def test_the_live_feed_resumes_after_the_console_restarts(
        console: Console, bus: Bus, page: Page) -> None:
    first = await bus.mail(subject="Before the restart")
    await console.caught_up(bus)
    await sign_in(page, console.url, ADMIN_KEY)
    await expect(row(page, first.mail_key)).to_be_visible()
    loads = count_loads(page)

    await console.proc.astop()
    await expect(page.locator("#live-status")).not_to_have_attribute("data-state", "open")
    during = await bus.mail(subject="While the console was down")
    await console.proc.astart()
    # reconnected with since=<last sequence>: the missed mail arrives without a reload
    await expect(row(page, during.mail_key)).to_be_visible()
    await expect(row(page, during.mail_key).locator(".label-badge")).to_have_text("order")
    await expect(page.locator("#live-status")).to_have_attribute("data-state", "open")
    after = await bus.mail(subject="After the restart")
    await expect(row(page, after.mail_key)).to_be_visible()
    assert loads == []


async def test_outbox_and_tenants_pages(console: Console, bus: Bus, nats_url: str, page: Page,
                                        screenshot: Callable[..., Any]) -> None:
    await seed(nats_url)  # deploy/tenants.yaml into the registry, as the stack does
    sent = await bus.mail(subject="Forward me")
    await console.caught_up(bus)
    await sign_in(page, console.url, ADMIN_KEY)

    await page.click('#nav a[data-route="outbox"]')
    delivery = page.locator(f'#outbox-table tr[data-delivery-id="fwd-{sent.mail_key}"]')
    await expect(delivery).to_contain_text("alice@acme.example")
    await expect(delivery.locator(".status")).to_have_text("sent")
    await screenshot(page, "outbox")
    await delivery.locator("a").click()
    await expect(page.locator(".detail")).to_have_attribute("data-mail-key", sent.mail_key)

    await page.keyboard.press("g")
    await page.keyboard.press("t")
    acme = page.locator('#tenants-table tr[data-tenant="acme"]')
    await expect(acme).to_contain_text("ACME GmbH")
    await expect(acme).to_contain_text("intake.example.com")
    await expect(acme).to_contain_text("demo-pbx")
    await acme.locator("a").click()
    await expect(page.locator("#filter-tenant")).to_have_value("acme")
    await expect(row(page, sent.mail_key)).to_be_visible()


async def test_an_open_list_survives_a_projection_rebuild(
        console: Console, bus: Bus, page: Page) -> None:
    """`postroom replay console` while dashboards are open: the server sends resync and closes
    the feed; the list reloads, reconnects and goes on live, still without a page load."""
    first = await bus.mail(subject="Before the rebuild")
    await console.caught_up(bus)
    await sign_in(page, console.url, ADMIN_KEY)
    await expect(row(page, first.mail_key)).to_be_visible()
    loads = count_loads(page)
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))

    response = await console.admin("POST", "/api/v1/admin/rebuild")
    assert response.status_code == 202, response.text
    await console.caught_up(bus)
    await expect(page.locator("#live-status")).to_have_attribute("data-state", "open")
    await expect(row(page, first.mail_key).locator(".label-badge")).to_have_text("order")
    after = await bus.mail(subject="After the rebuild", label="meeting")
    await expect(row(page, after.mail_key).locator(".label-badge")).to_have_text("meeting")
    await expect(page.locator(ROWS)).to_have_count(2)
    assert sockets, "the feed reconnected after the server closed it"
    assert loads == []


async def test_a_row_that_arrives_while_the_list_loads_is_kept(
        console: Console, bus: Bus, page: Page) -> None:
    """The list can be read before an event is applied while that event reaches the page
    before the list does (after a rebuild, a filter change, a resync): the row is held until
    the list is in, then shown, not dropped."""
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on(
        "framereceived", lambda payload: frames.append(str(payload))))
    first = await bus.mail(subject="Listed before", label="order")
    await console.caught_up(bus)
    await sign_in(page, console.url, ADMIN_KEY)
    await expect(row(page, first.mail_key)).to_be_visible()
    await expect(page.locator("#live-status")).to_have_attribute("data-state", "open")

    late: list[Any] = []

    async def answer_with_the_list_as_it_was(route: Any) -> None:
        response = await route.fetch()  # read now: the new mail is not in it
        late.append(await bus.mail(subject="Arrived during the load", label="order"))
        await until(lambda: any(late[0].mail_key in f and "mail.classified" in f
                                for f in frames), 30, what="the new mail's live events")
        await route.fulfill(response=response)

    await page.route(re.compile(r"/api/v1/mails\?"), answer_with_the_list_as_it_was)
    await page.select_option("#filter-label", "order")
    await expect(page.locator("#filter-label")).to_have_value("order")
    await until(lambda: late, 30, what="the list request")
    await expect(row(page, late[0].mail_key).locator(".label-badge")).to_have_text("order")
    await expect(row(page, first.mail_key)).to_be_visible()
    await expect(page.locator(ROWS)).to_have_count(2)
