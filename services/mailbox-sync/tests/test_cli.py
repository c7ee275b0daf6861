"""``postroom mailboxes add|list|remove`` against the running service (real HTTP, real
Dovecot): the password goes to the service and is stored sealed, never in clear."""

from __future__ import annotations

import asyncio

from mailbox_sync_testkit import PASSWORD, USER, Dovecot, Harness
from typer.testing import CliRunner

from postroom_cli.cli import app
from postroom_testing.procs import until


async def test_add_list_remove(harness: Harness, dovecot: Dovecot, tmp_path) -> None:
    runtime = await harness.start()
    url = f"http://127.0.0.1:{runtime.http_port}"
    token_dir = tmp_path / "data" / "mailbox-sync"
    token_dir.mkdir(parents=True)
    (token_dir / "api-token").write_text(harness.token + "\n")  # as `postroom up` keeps it
    runner = CliRunner()

    def cli(*args: str) -> str:
        result = runner.invoke(app, ["mailboxes", *args, "--url", url, "--data-dir",
                                     str(tmp_path / "data")], env={"MAILBOX_PASSWORD": PASSWORD})
        assert result.exit_code == 0, result.output
        return result.output

    added = await asyncio.to_thread(
        cli, "add", "--tenant", "acme", "--mailbox", "support", "--host", "127.0.0.1",
        "--port", str(dovecot.port), "--security", "none", "--user", USER, "--id", "desk")
    assert "added desk" in added
    await harness.watching("desk")
    listed = await asyncio.to_thread(cli, "list")
    assert "desk" in listed and "acme/support" in listed and "idle" in listed
    assert PASSWORD not in listed
    stored = (tmp_path / "mailbox_sync.db").read_bytes()
    assert PASSWORD.encode() not in stored  # sealed at rest
    assert "removed desk" in await asyncio.to_thread(cli, "remove", "desk")
    assert "no mailboxes" in await asyncio.to_thread(cli, "list")

    refused = await asyncio.to_thread(runner.invoke, app, [
        "mailboxes", "list", "--url", url, "--token", "wrong-token"])
    assert refused.exit_code == 1 and "401" in refused.output
    await until(lambda: not runtime.accounts.workers, 30, what="the account's workers stopped")
