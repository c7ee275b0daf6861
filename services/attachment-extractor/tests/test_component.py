"""Component tests with FastStream's TestNatsBroker: no server, the real handler, store and
outbox.

The in-memory broker hands the subscriber a message without JetStream metadata and never
redelivers a nak'ed message, so retries, backoff and dead letters are tested against a real
nats-server in test_integration.py; here: the happy path and the idempotency table.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import extractor_samples as samples
import pytest
from faststream.nats import JStream, TestNatsBroker
from prometheus_client import CollectorRegistry

from postroom_attachment_extractor import store
from postroom_attachment_extractor.app import build_runtime, document_id
from postroom_attachment_extractor.config import ExtractorSettings
from postroom_contracts import EVENTS_STREAM, DocumentStored, MailParsed
from postroom_runtime import FilesystemBlobStore, ServiceRuntime, event_headers


class Component:
    def __init__(self, runtime: ServiceRuntime, broker: Any,
                 published: dict[str, list[dict[str, Any]]]) -> None:
        self.runtime = runtime
        self.broker = broker
        self.published = published

    async def deliver(self, event: Any) -> None:
        await self.broker.publish(event.model_dump_json().encode(), subject=event.nats_subject,
                                  headers=event_headers(event), stream=EVENTS_STREAM)
        # the runtime is not started here, so neither is its background outbox relay: publish
        # what the handler committed, as the relay would
        for relay in self.runtime.relays.values():
            await relay.flush()


@pytest.fixture
async def component(tmp_path: Path) -> AsyncIterator[Component]:
    settings = ExtractorSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db",
                                 blob_backend="fs", blob_fs_root=tmp_path / "blobs")
    runtime = build_runtime(settings, registry=CollectorRegistry(), configure_logging=False)
    await runtime.store.migrate(runtime.migrations)  # type: ignore[arg-type]
    runtime.blobs = FilesystemBlobStore(settings.blob_fs_root, settings.blob_bucket)
    captured: dict[str, list[dict[str, Any]]] = {"document.stored": [], "mail.parsed": []}
    events = JStream(EVENTS_STREAM, declare=False)

    @runtime.broker.subscriber("postroom.document.stored.*", stream=events)
    async def on_document(body: dict[str, Any]) -> None:
        captured["document.stored"].append(body)

    @runtime.broker.subscriber("postroom.mail.parsed.*", stream=events)
    async def on_parsed(body: dict[str, Any]) -> None:
        captured["mail.parsed"].append(body)

    async with TestNatsBroker(runtime.broker) as broker:
        yield Component(runtime, broker, captured)
    await runtime.store.close()


async def test_a_mail_becomes_documents_and_events(component: Component) -> None:
    blobs = component.runtime.blobs
    assert blobs is not None
    raw = samples.mail(attachments=[
        samples.pdf_attachment("order.pdf", "PO-7"),
        {"data": samples.CSV_TEXT.encode(), "maintype": "text", "subtype": "csv",
         "filename": "lines.csv"},
    ])
    event = samples.received(await blobs.put(raw), actions=("extract", "classify"))
    await component.deliver(event)

    docs = [DocumentStored.model_validate(d) for d in component.published["document.stored"]]
    [parsed] = [MailParsed.model_validate(p) for p in component.published["mail.parsed"]]
    assert [(d.index, d.filename, d.supported) for d in docs] == [
        (0, "order.pdf", True), (1, "lines.csv", True)]
    assert [d.document_id for d in docs] == [document_id(event.mail_key, i) for i in (0, 1)]
    assert all(d.causation_id == event.event_id for d in docs)
    assert parsed.document_ids == [d.document_id for d in docs]
    assert parsed.actions == ["extract", "classify"]
    assert parsed.body_text == "Please find our order attached."
    assert docs[0].metadata.text_excerpt == "PO-7" and docs[1].metadata.rows == 3
    # the attachment bytes are in the blob store under their SHA-256
    assert await blobs.get(docs[1].blob) == samples.CSV_TEXT.encode()

    async with component.runtime.store.sessions() as s:
        rows = await store.list_documents(s, mail_key=event.mail_key)
        mail = await store.get_mail(s, event.mail_key)
    assert [r.document_id for r in rows] == parsed.document_ids
    assert mail.status == "PARSED" and mail.document_count == 2


async def test_a_repeated_delivery_is_skipped(component: Component) -> None:
    blobs = component.runtime.blobs
    assert blobs is not None
    event = samples.received(await blobs.put(samples.mail(attachments=[
        samples.pdf_attachment()])))
    await component.deliver(event)
    await component.deliver(event)
    assert len(component.published["document.stored"]) == 1
    assert len(component.published["mail.parsed"]) == 1
    async with component.runtime.store.sessions() as s:
        assert len(await store.list_documents(s)) == 1
        assert [t.status for t in await store.transitions_of(s, event.mail_key)] == [
            "RECEIVED", "STORED", "PARSED"]
