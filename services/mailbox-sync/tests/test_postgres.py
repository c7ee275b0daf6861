"""The same store on PostgreSQL (SQLite is the default; every other test runs on it): IMAP
ingest with a UIDVALIDITY re-index, and an inbound upload retried."""

from __future__ import annotations

from mailbox_sync_testkit import Dovecot, Harness, mail
from test_inbound import SECRET, post, signed

from postroom_testing.procs import until


async def test_imap_and_reindex_on_postgresql(harness: Harness, dovecot: Dovecot,
                                              postgres_url: str) -> None:
    dovecot.create("Support")
    await harness.start(database_url=postgres_url, imap_first_sync_days=30)
    await harness.add_account(dovecot, folders=["Support"])
    await harness.watching()
    old = mail(subject="on postgres")
    dovecot.append(old, "Support")
    await harness.wait_received(1)
    dovecot.delete("Support")
    dovecot.create("Support")
    dovecot.append(old, "Support")
    dovecot.append(mail(subject="after rebuild"), "Support")
    await harness.wait_received(2)

    async def reindexed() -> bool:
        folder = (await harness.account())["status"]["folders"][0]
        return folder["duplicates"] == 1 and folder["state"] == "idle"

    await until(reindexed, 60, what="the rebuilt folder re-indexed")
    assert [e["subject"] for e in await harness.received()] == ["on postgres", "after rebuild"]


async def test_inbound_retry_on_postgresql(harness: Harness, postgres_url: str) -> None:
    await harness.start(database_url=postgres_url,
                        mailbox_sync_inbound_secrets=f"acme/support={SECRET}")
    raw = mail()
    first = await post(harness, raw, signed(raw))
    again = await post(harness, raw, signed(raw))
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json()["duplicate"] is True
    await harness.wait_received(1)
    await harness.published_all()
    assert len(await harness.received()) == 1
