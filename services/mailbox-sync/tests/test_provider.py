"""Provider push against the simulator over real HTTP sockets: signed notifications, history
since the stored id, a lost notification caught up, and a bounded full resync (said in the
status, never a silent gap) when the stored id is too old."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from mailbox_sync_testkit import Harness, mail

from postroom_mailbox_sync.handlers import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from postroom_mailbox_sync.simulator import ProviderSimulator
from postroom_testing.procs import until

USER = "ai@acme.example"
HOOK_SECRET = "provider-webhook-secret-0123"


@pytest.fixture
async def simulator() -> AsyncIterator[ProviderSimulator]:
    sim = await ProviderSimulator(token="sim-token").start()
    try:
        yield sim
    finally:
        await sim.stop()


async def add_provider_account(harness: Harness, sim: ProviderSimulator) -> dict[str, Any]:
    async with harness.http as client:
        response = await client.post("/api/v1/accounts", json={
            "id": "gmailish", "kind": "provider", "tenant": "acme", "mailbox": "support",
            "host": sim.url, "username": USER, "oauth_token": "sim-token",
            "webhook_secret": HOOK_SECRET})
    assert response.status_code == 201, response.text
    assert harness.runtime is not None
    sim.mailbox(USER).watch = (
        f"http://127.0.0.1:{harness.runtime.http_port}/api/v1/push/gmailish", HOOK_SECRET)
    await until(lambda: _position(harness), 60, what="the starting history id stored")
    return response.json()


async def _position(harness: Harness) -> str | None:
    status = (await harness.account("gmailish"))["status"]
    folders = status["folders"]
    return folders[0]["position"].get("history_id") if folders else None


async def _position_is(harness: Harness, history_id: str) -> bool:
    return await _position(harness) == history_id


async def test_pushed_mail_is_fetched_from_history(harness: Harness,
                                                   simulator: ProviderSimulator) -> None:
    simulator.deliver(USER, mail(subject="before the account"))  # not ours: before the start
    await harness.start(mailbox_sync_provider_poll_seconds=600)
    await add_provider_account(harness, simulator)
    simulator.deliver(USER, mail(subject="pushed 1"))
    simulator.deliver(USER, mail(subject="pushed 2"))
    events = await harness.wait_received(2)
    assert [e["subject"] for e in events] == ["pushed 1", "pushed 2"]
    assert {e["source"] for e in events} == {"webhook"}
    # the simulator notes a notification once its answer is in, maybe after the mail went out
    await until(lambda: len(simulator.notifications) == 2, 60, what="both notifications answered")
    assert [n.get("status") for n in simulator.notifications] == [204, 204]
    # the position is stored after the mail is published (its events go out through the outbox
    # meanwhile): wait for it rather than read it as the last event arrives
    newest = str(simulator.mailbox(USER).next_history_id)
    await until(lambda: _position_is(harness, newest), 60, what="the newest history id stored")
    status = (await harness.account("gmailish"))["status"]
    assert status["state"] == "ok"
    assert status["folders"][0]["position"]["history_id"] == newest


async def test_unsigned_or_forged_notifications_are_refused(
        harness: Harness, simulator: ProviderSimulator) -> None:
    await harness.start()
    await add_provider_account(harness, simulator)
    assert harness.runtime is not None
    body = json.dumps({"emailAddress": USER, "historyId": "99999"}).encode()
    url = f"http://127.0.0.1:{harness.runtime.http_port}/api/v1/push/gmailish"
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        unsigned = await client.post(url, content=body)
        now = str(int(time.time()))
        forged = await client.post(url, content=body, headers={
            TIMESTAMP_HEADER: now, SIGNATURE_HEADER: sign("guessed-secret", now, body)})
        signed = await client.post(url, content=body, headers={
            TIMESTAMP_HEADER: now, SIGNATURE_HEADER: sign(HOOK_SECRET, now, body)})
    assert unsigned.status_code == 401 and forged.status_code == 401
    assert unsigned.headers["content-type"] == "application/problem+json"
    assert signed.status_code == 204


async def test_lost_notification_is_caught_up_by_the_poll(
        harness: Harness, simulator: ProviderSimulator) -> None:
    await harness.start(mailbox_sync_provider_poll_seconds=0.5)
    await add_provider_account(harness, simulator)
    simulator.notify = False
    simulator.deliver(USER, mail(subject="nobody told us"))
    [event] = await harness.wait_received(1)
    assert event["subject"] == "nobody told us"


async def test_too_old_history_id_gives_a_bounded_full_resync_not_a_gap(
        harness: Harness, simulator: ProviderSimulator) -> None:
    await harness.start(mailbox_sync_provider_poll_seconds=600,
                        mailbox_sync_resync_max_messages=3)
    await add_provider_account(harness, simulator)
    simulator.deliver(USER, mail(subject="seen before"))
    await harness.wait_received(1)

    simulator.notify = False  # the service is away while mail arrives and history expires
    for i in range(3):
        simulator.deliver(USER, mail(subject=f"missed {i}"))
    simulator.expire_history(USER)
    simulator.notify = True
    simulator.deliver(USER, mail(subject="latest"))

    await harness.wait_received(4)  # the newest 3 are read again: missed 1, missed 2, latest

    async def resynced() -> dict[str, Any] | None:
        folder = (await harness.account("gmailish"))["status"]["folders"][0]
        return folder if folder.get("last_full_resync") else None

    folder = await until(resynced, 30, what="the full resync reported")
    assert folder["last_full_resync"]["messages"] == 3
    assert folder["last_full_resync"]["cut_at_bound"] is True  # said, not silent
    subjects = [e["subject"] for e in await harness.received()]
    assert subjects == ["seen before", "missed 1", "missed 2", "latest"]
    assert len(set(subjects)) == len(subjects)


async def test_cli_adds_a_provider_account(harness: Harness, simulator: ProviderSimulator
                                           ) -> None:
    import asyncio

    from typer.testing import CliRunner

    from postroom_cli.cli import app

    runtime = await harness.start()
    url = f"http://127.0.0.1:{runtime.http_port}"
    runner = CliRunner()
    result = await asyncio.to_thread(runner.invoke, app, [
        "mailboxes", "add", "--kind", "provider", "--tenant", "acme", "--mailbox", "support",
        "--host", simulator.url, "--user", USER, "--oauth-token", "sim-token",
        "--webhook-secret", HOOK_SECRET, "--id", "pushed", "--url", url,
        "--token", harness.token])
    assert result.exit_code == 0, result.output

    async def pushing() -> bool:
        folders = (await harness.account("pushed"))["status"]["folders"]
        return bool(folders) and folders[0]["state"] == "push"

    await until(pushing, 30, what="the provider account synced")
    listed = await asyncio.to_thread(runner.invoke, app, [
        "mailboxes", "list", "--url", url, "--token", harness.token])
    assert "pushed" in listed.output and "push" in listed.output
    assert "sim-token" not in listed.output
