"""attachment-extractor against a real nats-server (JetStream, object store) and real
databases: documents and events, redelivery, dedup, dead letters, replay, the HTTP API."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import extractor_samples as samples
import httpx
import nats
import pytest
from nats.js.errors import BucketNotFoundError, NoKeysError, NotFoundError
from prometheus_client import CollectorRegistry

from postroom_attachment_extractor import app as app_module
from postroom_attachment_extractor.app import build_runtime, document_id
from postroom_attachment_extractor.config import ExtractorSettings
from postroom_contracts import EVENTS_STREAM, BlobRef, MailParsed, MailReceived, RouteDecision
from postroom_runtime import NatsBlobStore, ServiceRuntime, event_headers, publish_event
from postroom_runtime.deadletters import list_dead_letters, replay_dead_letter

CONSUMER = "attachment-extractor-mail-received"


class Extractor:
    """A started service plus a NATS client to look at what it published."""

    def __init__(self, runtime: ServiceRuntime, nc: Any) -> None:
        self.runtime = runtime
        self.nc = nc
        self.js = nc.jetstream()
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}")
        self.fetches: list[str] = []
        blobs = runtime.blobs
        assert blobs is not None
        original = blobs.get

        async def counting_get(ref: BlobRef) -> bytes:
            self.fetches.append(ref.key)
            return await original(ref)

        blobs.get = counting_get  # type: ignore[method-assign]

    def ref_for(self, raw: bytes) -> BlobRef:
        """The reference the service's blob store gives ``raw`` once it is put (as smtp-ingress
        would: the KV bucket for a small blob), without putting it."""
        blobs = self.runtime.blobs
        assert isinstance(blobs, NatsBlobStore)
        digest = hashlib.sha256(raw).hexdigest()
        bucket = blobs.small_bucket if blobs.is_small(len(raw)) else blobs.bucket
        return BlobRef(bucket=bucket, key=f"sha256/{digest}", size=len(raw), sha256=digest)

    async def put_raw(self, raw: bytes) -> BlobRef:
        assert self.runtime.blobs is not None
        return await self.runtime.blobs.put(raw, content_type="message/rfc822")

    async def publish(self, event: MailReceived, msg_id: str | None = None) -> None:
        if msg_id is None:
            await publish_event(self.runtime.broker, event, stream=EVENTS_STREAM)
        else:  # a copy JetStream cannot de-duplicate (e.g. after its window)
            await self.js.publish(event.nats_subject, event.model_dump_json().encode(),
                                  headers=event_headers(event, {"Nats-Msg-Id": msg_id}))

    async def events(self, event_type: str) -> list[dict[str, Any]]:
        info = await self.js.stream_info(EVENTS_STREAM)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await self.js.get_msg(EVENTS_STREAM, seq)
            if msg.subject.startswith(f"postroom.{event_type}."):
                out.append(json.loads(msg.data))
        return out

    async def wait_events(self, event_type: str, count: int, within: float = 20) -> list[Any]:
        found: list[Any] = []

        async def enough() -> bool:
            nonlocal found
            found = await self.events(event_type)
            return len(found) >= count

        await eventually(enough, within)
        return found

    async def object_keys(self) -> list[str]:
        """Keys of every stored blob: Object Store objects and small blobs in the KV bucket."""
        assert self.runtime.blobs is not None
        bucket = self.runtime.blobs.bucket
        obs = await self.js.object_store(bucket)
        try:
            keys = [info.name for info in await obs.list(ignore_deletes=True)]
        except NotFoundError:  # nothing in the Object Store
            keys = []
        try:
            kv = await self.js.key_value(f"{bucket}-small")
            keys += await kv.keys()
        except (BucketNotFoundError, NoKeysError):
            pass
        return sorted(keys)


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@pytest.fixture
async def start_extractor(nats_server: Any, tmp_path: Path) -> AsyncIterator[Any]:
    started: list[Extractor] = []

    async def start(*, database_url: str | None = None, **overrides: Any) -> Extractor:
        values: dict[str, Any] = dict(
            nats_url=nats_server.url,
            database_url=database_url or f"sqlite+aiosqlite:///{tmp_path}/extractor.db",
            http_port=0, consumer_max_deliver=3, consumer_backoff_base_seconds=0.05,
            consumer_backoff_max_seconds=0.2,
        )
        values.update(overrides)
        runtime = build_runtime(ExtractorSettings(**values), registry=CollectorRegistry(),
                                configure_logging=False)
        await runtime.start()
        extractor = Extractor(runtime, await nats.connect(nats_server.url))
        started.append(extractor)
        return extractor

    yield start
    for extractor in started:
        await extractor.http.aclose()
        await extractor.runtime.stop()
        await extractor.nc.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/extractor.db"
    return str(request.getfixturevalue("postgres_url"))


async def test_a_received_mail_becomes_documents_events_and_api_entries(
    start_extractor: Any, database_url: str
) -> None:
    ex = await start_extractor(database_url=database_url)
    workbook = samples.xlsx_bytes([["sku", "qty"], ["A-1", 4]])
    raw = samples.mail(
        html="<p>Please find our order attached.</p>",
        headers={"In-Reply-To": "<quote-9@intake.example.com>",
                 "References": "<quote-1@intake.example.com> <quote-9@intake.example.com>"},
        attachments=[
            samples.pdf_attachment("Bestellung März.pdf", "PO-2026-001"),
            {"data": workbook, "maintype": "application", "subtype": "octet-stream",
             "filename": "lines.xlsx"},
            {"data": samples.png_bytes(), "maintype": "image", "subtype": "png",
             "filename": "logo.png", "disposition": "inline", "cid": "<logo>"},
            {"data": b"<script>alert(1)</script>", "maintype": "text", "subtype": "html",
             "filename": "page.html"},
        ])
    event = samples.received(await ex.put_raw(raw), actions=("extract", "reply"))
    await ex.publish(event)

    [parsed] = await ex.wait_events("mail.parsed", 1)
    docs = await ex.events("document.stored")
    assert [(d["index"], d["filename"], d["sniffed_content_type"], d["supported"]) for d in docs] \
        == [(0, "Bestellung März.pdf", "application/pdf", True),
            (1, "lines.xlsx",
             "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", True),
            (2, "page.html", "text/html", False)]
    assert docs[0]["metadata"]["pages"] == 1
    assert docs[0]["metadata"]["text_excerpt"] == "PO-2026-001"
    assert docs[1]["metadata"]["sheets"] == ["Orders"] and docs[1]["metadata"]["rows"] == 1
    assert parsed["document_ids"] == [document_id(event.mail_key, i) for i in range(3)]
    assert parsed["document_ids"] == [d["document_id"] for d in docs]
    assert parsed["body_text"] == "Please find our order attached."
    assert parsed["in_reply_to"] == "<quote-9@intake.example.com>"
    assert parsed["references"] == ["<quote-1@intake.example.com>",
                                    "<quote-9@intake.example.com>"]
    assert parsed["actions"] == ["extract", "reply"] and parsed["skipped_parts"] == 1
    assert parsed["causation_id"] == event.event_id and parsed["tenant"] == "acme"
    # one blob per attachment, content-addressed, next to the raw mail
    keys = await ex.object_keys()
    assert {d["blob"]["key"] for d in docs} | {event.raw.key} == set(keys)

    mail = (await ex.http.get(f"/mails/{event.mail_key}")).json()
    assert mail["status"] == "PARSED" and mail["document_count"] == 3 and mail["error"] is None
    assert [t["status"] for t in mail["transitions"]] == ["RECEIVED", "STORED", "PARSED"]
    assert [d["document_id"] for d in mail["documents"]] == parsed["document_ids"]
    listed = (await ex.http.get("/documents", params={"tenant": "acme"})).json()
    assert [d["document_id"] for d in listed] == parsed["document_ids"]
    one = (await ex.http.get(f"/documents/{docs[0]['document_id']}")).json()
    assert one["filename"] == "Bestellung März.pdf" and one["supported"] is True
    assert one["sha256"] == docs[0]["sha256"] and one["metadata"]["pages"] == 1

    pdf = await ex.http.get(one["content_url"])
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert hashlib.sha256(pdf.content).hexdigest() == one["sha256"]
    assert pdf.headers["content-disposition"] == (
        "attachment; filename=\"Bestellung M_rz.pdf\"; "
        "filename*=UTF-8''Bestellung%20M%C3%A4rz.pdf")
    # an HTML attachment is served as an opaque download, never rendered
    html = await ex.http.get(f"/documents/{docs[2]['document_id']}/content")
    assert html.content == b"<script>alert(1)</script>\n"  # as sent (text parts end in a newline)
    assert html.headers["content-type"] == "application/octet-stream"
    assert html.headers["x-content-type-options"] == "nosniff"
    assert html.headers["content-disposition"].startswith("attachment;")


async def test_mail_parsed_lists_the_documents_and_carries_the_route_and_raw_through(
    start_extractor: Any
) -> None:
    ex = await start_extractor()
    wav = samples.wav_bytes()
    raw = samples.mail(text="You have a new voicemail from 5551234.", attachments=[
        {"data": wav, "maintype": "audio", "subtype": "x-wav", "filename": "msg0001.wav"},
        {"data": samples.pdf_bytes("fax"), "maintype": "application",
         "subtype": "octet-stream", "filename": "fax.pdf"},
    ])
    route = RouteDecision(kind="pbx", pbx="ipoffice", matched_by="network", transcribe=True,
                          language="en-US", forward_to=["alice@acme.example"],
                          forward_mode="original")
    event = samples.received(await ex.put_raw(raw)).model_copy(update={"route": route})
    await ex.publish(event)

    [payload] = await ex.wait_events("mail.parsed", 1)
    parsed = MailParsed.model_validate(payload)
    docs = await ex.events("document.stored")
    assert parsed.route == route
    assert parsed.raw == event.raw
    assert [d.document_id for d in parsed.documents] == parsed.document_ids \
        == [d["document_id"] for d in docs]
    audio, pdf = parsed.documents
    assert (audio.index, audio.filename, audio.size) == (0, "msg0001.wav", len(wav))
    assert audio.content_type.startswith("audio/")  # sniffed from the RIFF/WAVE bytes
    assert audio.sha256 == hashlib.sha256(wav).hexdigest() == audio.blob.sha256
    assert pdf.content_type == "application/pdf"  # sniffed, not the declared octet-stream
    assert [d.blob.model_dump(mode="json") for d in parsed.documents] \
        == [d["blob"] for d in docs]
    assert ex.runtime.blobs is not None
    assert await ex.runtime.blobs.get(audio.blob) == wav  # the reference is usable as is

    # ordinary intake mail: no route, and the documents still listed
    other = samples.mail(message_id="<po-2@supplier.example>",
                         attachments=[samples.pdf_attachment("po.pdf")])
    await ex.publish(samples.received(await ex.put_raw(other),
                                      message_id="<po-2@supplier.example>"))
    second = MailParsed.model_validate((await ex.wait_events("mail.parsed", 2))[1])
    assert second.route is None and len(second.documents) == 1
    assert second.documents[0].filename == "po.pdf"


async def test_the_same_event_twice_gives_one_set_of_documents_and_events(
    start_extractor: Any
) -> None:
    ex = await start_extractor()
    raw = samples.mail(attachments=[samples.pdf_attachment("a.pdf"),
                                    samples.pdf_attachment("b.pdf", "Other")])
    event = samples.received(await ex.put_raw(raw))
    await ex.publish(event)
    await ex.publish(event, msg_id="re-published-after-the-dedup-window")
    await ex.wait_events("mail.parsed", 1)
    await eventually(lambda: _consumer_idle(ex))
    await asyncio.sleep(0.3)
    assert len(await ex.events("mail.received")) == 2  # both copies were delivered
    assert len(await ex.events("mail.parsed")) == 1
    assert len(await ex.events("document.stored")) == 2
    assert ex.fetches == [event.raw.key]  # the second copy was skipped, not re-parsed
    assert len((await ex.http.get("/documents")).json()) == 2

    # a later mail.received for a mail already parsed (another event id) adds nothing
    again = event.model_copy(update={"event_id": "another-" + event.event_id[8:]})
    await ex.publish(again)
    await eventually(lambda: _consumer_idle(ex))
    assert len(await ex.events("mail.parsed")) == 1
    assert len((await ex.http.get("/documents")).json()) == 2
    mail = (await ex.http.get(f"/mails/{event.mail_key}")).json()
    assert [t["status"] for t in mail["transitions"]] == ["RECEIVED", "STORED", "PARSED"]


@pytest.mark.parametrize("small_blobs", [0, 65536], ids=["object-store", "small-blobs-in-kv"])
async def test_the_same_attachment_in_two_mails_is_one_blob_and_two_documents(
    start_extractor: Any, small_blobs: int
) -> None:
    ex = await start_extractor(blob_small_max_bytes=small_blobs)
    shared = samples.pdf_attachment("terms.pdf", "General terms")
    for n in (1, 2):
        raw = samples.mail(message_id=f"<po-{n}@supplier.example>", attachments=[shared])
        await ex.publish(samples.received(await ex.put_raw(raw),
                                          message_id=f"<po-{n}@supplier.example>"))
    await ex.wait_events("mail.parsed", 2)
    docs = (await ex.http.get("/documents")).json()
    assert len(docs) == 2 and len({d["document_id"] for d in docs}) == 2
    assert len({d["mail_key"] for d in docs}) == 2
    assert len({d["sha256"] for d in docs}) == 1 and len({d["blob"]["key"] for d in docs}) == 1
    keys = await ex.object_keys()
    assert keys.count(docs[0]["blob"]["key"]) == 1
    assert len(keys) == 3  # two raw mails (different Message-IDs) and one shared attachment
    expected_bucket = "postroom-blobs-small" if small_blobs else "postroom-blobs"
    assert docs[0]["blob"]["bucket"] == expected_bucket
    content = await ex.http.get(docs[0]["content_url"])
    assert content.status_code == 200
    assert hashlib.sha256(content.content).hexdigest() == docs[0]["sha256"]


async def test_a_mail_whose_raw_mime_is_missing_fails_after_bounded_retries(
    start_extractor: Any
) -> None:
    ex = await start_extractor(consumer_max_deliver=3)
    raw = samples.mail(attachments=[samples.pdf_attachment()])
    event = samples.received(ex.ref_for(raw))  # never put
    await ex.publish(event)

    [failed] = await ex.wait_events("mail.failed", 1)
    assert failed["stage"] == "fetch" and failed["error"].startswith("BlobNotFound")
    assert failed["causation_id"] == event.event_id
    await asyncio.sleep(1.0)  # would be several more attempts if it looped
    assert len(ex.fetches) == 3
    [letter] = await list_dead_letters(ex.js, CONSUMER)
    assert letter.letter.deliveries == 3 and letter.letter.mail_key == event.mail_key
    assert await ex.events("mail.parsed") == []
    mail = (await ex.http.get(f"/mails/{event.mail_key}")).json()
    assert mail["status"] == "FAILED" and mail["error"].startswith("BlobNotFound")
    assert [t["status"] for t in mail["transitions"]] == ["RECEIVED", "FAILED"]
    failed_list = (await ex.http.get("/mails", params={"status": "FAILED"})).json()
    assert [m["mail_key"] for m in failed_list] == [event.mail_key]

    # the blob turns up; replaying the dead letter parses the mail
    await ex.put_raw(raw)
    await replay_dead_letter(ex.js, letter.sequence)
    [parsed] = await ex.wait_events("mail.parsed", 1)
    assert len(parsed["document_ids"]) == 1
    mail = (await ex.http.get(f"/mails/{event.mail_key}")).json()
    assert mail["status"] == "PARSED" and mail["error"] is None
    assert [t["status"] for t in mail["transitions"]] == [
        "RECEIVED", "FAILED", "RECEIVED", "STORED", "PARSED"]
    assert len(await ex.events("mail.failed")) == 1
    assert await list_dead_letters(ex.js, CONSUMER) == []


async def test_a_mail_the_parser_chokes_on_is_dead_lettered_at_once(
    start_extractor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def choke(raw: bytes, limits: Any) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(app_module, "parse_mail", choke)
    # a parser replaced in this process runs in a thread of it, not in a worker process
    ex = await start_extractor(consumer_max_deliver=5, worker_processes=0)
    event = samples.received(await ex.put_raw(samples.mail()))
    await ex.publish(event)
    [failed] = await ex.wait_events("mail.failed", 1)
    assert failed["stage"] == "parse"
    assert "cannot parse mail: RecursionError" in failed["error"]
    await asyncio.sleep(0.5)
    assert len(ex.fetches) == 1  # deterministic: not retried
    [letter] = await list_dead_letters(ex.js, CONSUMER)
    assert letter.letter.deliveries == 1
    mail = (await ex.http.get(f"/mails/{event.mail_key}")).json()
    assert [t["status"] for t in mail["transitions"]] == ["RECEIVED", "STORED", "FAILED"]


async def test_a_transient_failure_is_retried_and_then_succeeds(start_extractor: Any) -> None:
    ex = await start_extractor(consumer_max_deliver=5)
    raw = samples.mail(attachments=[samples.pdf_attachment()])
    event = samples.received(ex.ref_for(raw))  # not put yet
    await ex.publish(event)
    await eventually(lambda: _true(len(ex.fetches) >= 2))
    await ex.put_raw(raw)  # the blob store catches up
    [parsed] = await ex.wait_events("mail.parsed", 1)
    assert len(parsed["document_ids"]) == 1
    assert await ex.events("mail.failed") == []
    assert await list_dead_letters(ex.js) == []
    mail = (await ex.http.get(f"/mails/{event.mail_key}")).json()
    assert [t["status"] for t in mail["transitions"]] == ["RECEIVED", "STORED", "PARSED"]


async def test_http_api_errors_are_problem_documents(start_extractor: Any) -> None:
    ex = await start_extractor()
    for url in ("/documents/nope", "/documents/nope/content", "/mails/nope"):
        response = await ex.http.get(url)
        assert response.status_code == 404, url
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == 404 and "nope" in response.json()["detail"]
    bad = await ex.http.get("/documents", params={"limit": 501})
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"
    assert "limit" in bad.json()["detail"]
    assert (await ex.http.get("/documents", params={"limit": 500})).json() == []
    assert (await ex.http.get("/mails", params={"status": "BOGUS"})).status_code == 422
    ready = await ex.http.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["checks"]["store"] == "ok"


async def test_documents_are_listed_newest_first_and_paged(start_extractor: Any) -> None:
    ex = await start_extractor()
    for n, tenant in enumerate(["acme", "globex", "acme"]):
        mid = f"<po-{n}@supplier.example>"
        raw = samples.mail(message_id=mid, attachments=[
            samples.pdf_attachment(f"{tenant}-{n}-a.pdf", f"{n}a"),
            samples.pdf_attachment(f"{tenant}-{n}-b.pdf", f"{n}b")])
        await ex.publish(samples.received(await ex.put_raw(raw), tenant=tenant, message_id=mid))
        await ex.wait_events("mail.parsed", n + 1)
    names = [d["filename"] for d in (await ex.http.get("/documents")).json()]
    assert names == ["acme-2-a.pdf", "acme-2-b.pdf", "globex-1-a.pdf", "globex-1-b.pdf",
                     "acme-0-a.pdf", "acme-0-b.pdf"]
    page = (await ex.http.get("/documents", params={"tenant": "acme", "limit": 2,
                                                    "offset": 1})).json()
    assert [d["filename"] for d in page] == ["acme-2-b.pdf", "acme-0-a.pdf"]
    [mail_key] = {d["mail_key"] for d in page[1:]}
    by_mail = (await ex.http.get("/documents", params={"mail_key": mail_key})).json()
    assert [d["filename"] for d in by_mail] == ["acme-0-a.pdf", "acme-0-b.pdf"]


async def _consumer_idle(ex: Extractor) -> bool:
    info = await ex.js.consumer_info(EVENTS_STREAM, CONSUMER)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def _true(value: bool) -> bool:
    return value
