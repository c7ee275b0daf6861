"""Changing an account through ``PATCH /api/v1/accounts/{id}`` (and ``postroom mailboxes
update``) against a real Dovecot: a new password takes effect at once, a disabled account
stops and, enabled again, reads what arrived meanwhile from its stored position; a new
folder is watched; bad changes get a problem and leave the account as it was."""

from __future__ import annotations

import asyncio
from typing import Any

from mailbox_sync_testkit import PASSWORD, USER, Dovecot, Harness, mail
from typer.testing import CliRunner

from postroom_cli.cli import app
from postroom_testing.procs import until


async def _patch(harness: Harness, body: dict[str, Any], account_id: str = "support"
                 ) -> Any:
    async with harness.http as client:
        return await client.patch(f"/api/v1/accounts/{account_id}", json=body)


async def _state(harness: Harness, state: str) -> dict | None:
    status = (await harness.account())["status"]
    return status if status["state"] == state else None


async def test_a_new_password_takes_effect_and_is_stored_sealed(
        harness: Harness, dovecot: Dovecot, tmp_path) -> None:
    await harness.start()
    await harness.add_account(dovecot, password="wrong-password")
    status = await until(lambda: _state(harness, "error"), 30, what="the login refused")
    assert "authentication failed" in status["last_error"].lower()

    response = await _patch(harness, {"password": PASSWORD})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "support" and body["auth"] == "password"
    assert PASSWORD not in response.text and "secret" not in body
    await harness.watching()
    dovecot.append(mail(subject="after the new password"))
    [event] = await harness.wait_received(1)
    assert event["subject"] == "after the new password"
    stored = (tmp_path / "mailbox_sync.db").read_bytes()
    assert PASSWORD.encode() not in stored and b"wrong-password" not in stored


async def test_disabled_then_enabled_reads_what_arrived_meanwhile(
        harness: Harness, dovecot: Dovecot) -> None:
    await harness.start()
    await harness.add_account(dovecot)
    await harness.watching()
    dovecot.append(mail(subject="before"))
    await harness.wait_received(1)

    response = await _patch(harness, {"enabled": False})
    assert response.status_code == 200 and response.json()["enabled"] is False
    status = (await harness.account())["status"]
    assert status["state"] == "disabled" and status["folders"] == []
    assert harness.runtime is not None and "support" not in harness.runtime.accounts.workers
    dovecot.append(mail(subject="while disabled"))

    assert (await _patch(harness, {"enabled": True})).status_code == 200
    await harness.watching()
    events = await harness.wait_received(2)
    assert [e["subject"] for e in events] == ["before", "while disabled"]
    folder = (await harness.account())["status"]["folders"][0]
    assert folder["position"]["ingested_total"] == 2
    assert folder["position"]["duplicates_total"] == 0  # resumed, not re-read


async def test_a_folder_added_is_watched(harness: Harness, dovecot: Dovecot) -> None:
    dovecot.create("Orders")
    await harness.start()
    await harness.add_account(dovecot)
    await harness.watching()
    response = await _patch(harness, {"folders": ["INBOX", "Orders"], "mode": "idle"})
    assert response.status_code == 200, response.text
    assert response.json()["folders"] == ["INBOX", "Orders"]
    await harness.watching()
    assert [f["folder"] for f in (await harness.account())["status"]["folders"]] == [
        "INBOX", "Orders"]
    dovecot.append(mail(subject="an order"), "Orders")
    [event] = await harness.wait_received(1)
    assert event["subject"] == "an order"


async def test_bad_changes_get_a_problem_and_change_nothing(
        harness: Harness, dovecot: Dovecot) -> None:
    await harness.start()
    await harness.add_account(dovecot, folders=["INBOX"])
    await harness.watching()
    before = await harness.account()

    cases = [
        ({"move_to": "INBOX"}, 422, "move_to must not be a watched folder"),
        ({"tenant": "Not A Slug"}, 422, "is not a tenant slug"),
        ({"folders": None}, 422, "folders cannot be null"),
        ({"kind": "provider"}, 422, "kind"),  # the kind stays what it is
        ({"folders": []}, 422, "folders"),
    ]
    for body, status, needle in cases:
        response = await _patch(harness, body)
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json", body
        assert needle in response.text, (body, response.text)
    assert (await _patch(harness, {"mode": "poll"}, "nobody")).status_code == 404
    after = await harness.account()
    assert {k: v for k, v in after.items() if k != "status"} == {
        k: v for k, v in before.items() if k != "status"}
    assert after["status"]["state"] == "ok"


async def test_the_environment_account_is_changed_by_its_variables(
        harness: Harness, dovecot: Dovecot) -> None:
    await harness.start(imap_host="127.0.0.1", imap_port=dovecot.port, imap_ssl=False,
                        email_address=USER, email_password=PASSWORD,
                        mailbox_sync_tenant="acme")
    await harness.watching("env")
    response = await _patch(harness, {"mode": "poll"}, "env")
    assert response.status_code == 409
    assert "IMAP_HOST" in response.json()["detail"]


async def test_postroom_mailboxes_update(harness: Harness, dovecot: Dovecot, tmp_path) -> None:
    runtime = await harness.start()
    url = f"http://127.0.0.1:{runtime.http_port}"
    await harness.add_account(dovecot, password="wrong-password")
    await until(lambda: _state(harness, "error"), 30, what="the login refused")
    runner = CliRunner()

    def cli(*args: str) -> Any:
        return runner.invoke(app, ["mailboxes", *args, "--url", url, "--token", harness.token],
                             env={"MAILBOX_PASSWORD": PASSWORD})

    result = await asyncio.to_thread(cli, "update", "support", "--password", "--mode", "poll")
    assert result.exit_code == 0, result.output
    assert f"updated support: {USER} at 127.0.0.1:{dovecot.port} (enabled" in result.output
    assert PASSWORD not in result.output
    await harness.watching(state="polling")
    nothing = await asyncio.to_thread(cli, "update", "support")
    assert nothing.exit_code == 1 and "nothing to change" in nothing.output
    result = await asyncio.to_thread(cli, "update", "support", "--disable")
    assert result.exit_code == 0 and "(disabled" in result.output
    assert (await harness.account())["status"]["state"] == "disabled"
