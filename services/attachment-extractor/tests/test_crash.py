"""SIGKILL the running service again and again while it works through a queue of mails:
afterwards every mail is parsed exactly once, with exactly its documents and events."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import extractor_samples as samples
import httpx
import nats
import pytest

from postroom_contracts import DLQ_STREAM, EVENTS_STREAM
from postroom_runtime import NatsBlobStore, event_headers, provision_streams
from postroom_testing.procs import free_port

MAILS = 150
KILLS = 6
ACK_WAIT = 6  # CONSUMER_ACK_WAIT_SECONDS' default: a killed process's messages come back after it
CONSUMER = "attachment-extractor-mail-received"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    # both: CONSUMER_CONCURRENCY mails prepared at once; their write transactions one at a time
    # on SQLite (group commit), CONSUMER_CONCURRENCY at once on PostgreSQL
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/extractor.db"
    return str(request.getfixturevalue("postgres_url"))


async def _subjects(js: Any) -> dict[str, list[dict[str, Any]]]:
    info = await js.stream_info(EVENTS_STREAM)
    out: dict[str, list[dict[str, Any]]] = {}
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(EVENTS_STREAM, seq)
        event_type = ".".join(msg.subject.split(".")[1:3])
        out.setdefault(event_type, []).append(json.loads(msg.data))
    return out


async def test_sigkill_at_any_moment_loses_nothing_and_duplicates_nothing(
    nats_server: Any, service_process: Any, database_url: str
) -> None:
    port = free_port()
    service = service_process(
        ["postroom-attachment-extractor"],
        name="attachment-extractor",
        env={
            "NATS_URL": nats_server.url,
            "DATABASE_URL": database_url,
            "HTTP_PORT": str(port),
            "BLOB_BACKEND": "nats",
            "CONSUMER_ACK_WAIT_SECONDS": str(ACK_WAIT),  # the default
            "CONSUMER_MAX_DELIVER": "30",
            "CONSUMER_BACKOFF_BASE_SECONDS": "0.1",
            "LOG_LEVEL": "WARNING",
        },
        ready_url=f"http://127.0.0.1:{port}/health/ready",
    )
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await provision_streams(js)
    blobs = NatsBlobStore(js, "postroom-blobs")
    shared_terms = samples.pdf_attachment("terms.pdf", "General terms")
    csv = {"data": samples.CSV_TEXT.encode(), "maintype": "text", "subtype": "csv",
           "filename": "lines.csv"}
    keys = set()
    for n in range(MAILS):
        mid = f"<po-{n}@supplier.example>"
        raw = samples.mail(message_id=mid, attachments=[
            samples.pdf_attachment(f"po-{n}.pdf", f"Purchase order {n}"), shared_terms, csv])
        event = samples.received(await blobs.put(raw), message_id=mid)
        keys.add(event.mail_key)
        await js.publish(event.nats_subject, event.model_dump_json().encode(),
                         headers=event_headers(event))

    async def parsed() -> int:
        info = await js.stream_info(EVENTS_STREAM, subjects_filter="postroom.mail.parsed.>")
        return sum((info.state.subjects or {}).values())

    async def held_by_the_service() -> int:
        info = await js.consumer_info(EVENTS_STREAM, CONSUMER)
        return info.num_ack_pending

    async def until(check: Any, what: str, within: float = 120) -> None:
        deadline = asyncio.get_running_loop().time() + within
        while not await check():
            assert asyncio.get_running_loop().time() < deadline, what
            await asyncio.sleep(0.02)

    # kill on observed progress, never on wall time: each life of the process ends once it
    # has parsed a few more mails and holds more in flight (fetched, not acked). A group
    # commit finishes several mails at once (at most a fetched batch, 32): small steps keep
    # most of the work for later lives
    step = MAILS // 20
    progress: list[int] = []
    held: list[int] = []
    try:
        for life in range(KILLS):
            await service.astart()
            target = (progress[-1] if progress else 0) + step

            async def mid_work(target: int = target) -> bool:
                return (target <= await parsed() < MAILS
                        and await held_by_the_service() > 0)

            await until(mid_work, f"life {life}: no progress to {target} parsed")
            service.kill()  # SIGKILL: no shutdown, no cleanup
            progress.append(await parsed())
            held.append(await held_by_the_service())
        killed_at = asyncio.get_running_loop().time()
        await service.astart()

        async def redelivered() -> bool:
            # the messages the killed process held are handed out again
            info = await js.consumer_info(EVENTS_STREAM, CONSUMER)
            return info.num_redelivered > 0 or info.num_ack_pending < held[-1]

        await until(redelivered, "the killed process's messages never came back")
        print(f"\nkill -> its held messages delivered again: "
              f"{asyncio.get_running_loop().time() - killed_at:.1f} s "
              f"(ack wait {ACK_WAIT} s; includes the restart)")

        async def all_parsed() -> bool:
            return await parsed() >= MAILS

        await until(all_parsed, "not every mail was parsed")

        async def drained() -> bool:  # every message acked, the outbox published
            info = await js.consumer_info(EVENTS_STREAM, CONSUMER)
            return info.num_pending == 0 and info.num_ack_pending == 0

        await until(drained, "the consumer still holds messages")

        async def outbox_empty() -> bool:
            events = await _subjects(js)
            return len(events.get("document.stored", [])) >= 3 * MAILS

        await until(outbox_empty, "documents not all published")

        events = await _subjects(js)
        # every kill landed while work was in progress: mails parsed before it and after it,
        # and messages held by the process it killed
        assert all(0 < n < MAILS for n in progress), progress
        assert progress == sorted(progress) and progress[0] < progress[-1], progress
        assert any(n > 0 for n in held), held
        parsed = events["mail.parsed"]
        docs = events["document.stored"]
        assert len(parsed) == MAILS and {p["mail_key"] for p in parsed} == keys
        assert len(docs) == 3 * MAILS
        assert len({d["event_id"] for d in docs}) == 3 * MAILS
        assert len({d["document_id"] for d in docs}) == 3 * MAILS
        assert sorted(d for p in parsed for d in p["document_ids"]) == sorted(
            d["document_id"] for d in docs)
        assert "mail.failed" not in events
        dlq = await js.stream_info(DLQ_STREAM)
        assert dlq.state.messages == 0

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            mails = (await http.get("/mails", params={"limit": 500})).json()
            assert len(mails) == MAILS and {m["status"] for m in mails} == {"PARSED"}
            assert {m["document_count"] for m in mails} == {3}
            for key in keys:
                mail = (await http.get(f"/mails/{key}")).json()
                assert [t["status"] for t in mail["transitions"]] == [
                    "RECEIVED", "STORED", "PARSED"], key
            documents = (await http.get("/documents", params={"limit": 500})).json()
            assert len(documents) == 3 * MAILS
        # content-addressed: per mail its raw MIME (Object Store, as put above) and its own PDF;
        # terms and CSV once (attachments in the small-blob KV bucket)
        obs = await js.object_store("postroom-blobs")
        assert len([o for o in await obs.list() if not o.deleted]) == MAILS
        small = await js.stream_info("KV_postroom-blobs-small")  # history 1: a message per key
        assert small.state.messages == MAILS + 2
    finally:
        await nc.close()
