"""The whole stack (every registered service as its own process on a real nats-server) with
the dashboard open in Chromium: a mail sent over real SMTP to smtp-ingress appears in the
table without a reload, gets its label from the classifier, and its detail shows every step
with the trace id."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_harness import ADMIN_KEY
from dashboard_helpers import count_loads, sign_in
from e2e_stack import LocalDns, Stack, order_mail, start_stack
from playwright.async_api import Page, expect

from postroom_testing.nats import NatsServer
from postroom_testing.procs import ServiceProcess

pytestmark = pytest.mark.e2e

ROWS = "#mail-table tbody tr[data-mail-key]"


@pytest.fixture
def dns() -> Iterator[LocalDns]:
    server = LocalDns()
    yield server
    server.close()


@pytest.fixture
def stack(nats_server: NatsServer, service_process: Callable[..., ServiceProcess],
          tmp_path: Path, dns: LocalDns) -> Stack:
    """Every registered service, as tests/e2e starts them, the console with an admin key."""
    stack = start_stack(nats_server, service_process, tmp_path, dns, CONSOLE_ADMIN_KEY=ADMIN_KEY)
    assert "console" in stack.processes, "the console is a registered service"
    return stack


async def test_a_mail_sent_over_smtp_appears_live_with_its_label_and_trace(
        stack: Stack, page: Page, screenshot: Callable[..., Any]) -> None:
    console = f"http://127.0.0.1:{stack.http_ports['console']}"
    await sign_in(page, console, ADMIN_KEY)
    loads = count_loads(page)

    msg = order_mail(4711)
    code, _ = await asyncio.to_thread(stack.send, msg)
    accepted = time.monotonic()
    assert code == 250
    mail_row = page.locator(ROWS, has_text="Purchase order PO-04711")
    await expect(mail_row).to_have_count(1)
    appeared = time.monotonic() - accepted
    badge = mail_row.locator(".label-badge")
    await expect(badge).to_have_attribute("data-label", "order")
    labelled = time.monotonic() - accepted
    assert loads == [], "the row must arrive without a page load"
    print(f"\nrow visible {appeared * 1000:.0f} ms after the 250, "
          f"labelled {labelled * 1000:.0f} ms after it")
    await screenshot(page, "smtp-live")

    mail_key = await mail_row.get_attribute("data-mail-key")
    async with httpx.AsyncClient(base_url=console, timeout=30,
                                 headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as http:
        detail = (await http.get(f"/api/v1/mails/{mail_key}")).json()
    assert detail["label"] == "order"
    assert re.fullmatch(r"[0-9a-f]{32}", detail["trace_id"] or "")

    await mail_row.locator("a.subject").click()
    await expect(page.locator("#trace-id")).to_have_text(detail["trace_id"])
    timeline = page.locator("#timeline li[data-event-type]")
    for event_type in ("mail.received", "mail.authenticated", "mail.parsed", "mail.classified"):
        await expect(timeline.and_(page.locator(f'[data-event-type="{event_type}"]'))
                     ).to_have_count(1)
    await expect(page.locator('#timeline li[data-event-type="document.stored"]')).to_have_count(2)
    # every step is in the mail's trace: no step shows a trace id of its own
    await expect(page.locator("#timeline .tl-trace")).to_have_count(0)
    await expect(page.locator("#documents li")).to_have_count(2)
    await expect(page.locator('#auth-table tr[data-mechanism="spf"] .verdict')).to_have_text("pass")
    await screenshot(page, "smtp-detail", full_page=True)
