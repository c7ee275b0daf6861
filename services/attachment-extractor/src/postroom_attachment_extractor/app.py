"""attachment-extractor: mail.received in; documents, document.stored and mail.parsed out.

Per mail, first outside any transaction and for several mails at once (the runtime's prepare
step: nothing here needs a transaction, and doing it again after a crash stores nothing new):
fetch the raw MIME from the blob store and verify it, parse it (CPU work, in a worker process),
store each attachment in the blob store by SHA-256. Then in the consumer transaction, so all
of it commits or none of it (shared with other mails' on SQLite: group commit): RECEIVED →
STORED → one ``documents`` row and one ``document.stored`` event per attachment → PARSED and
``mail.parsed``. A mail that cannot be handled after ``CONSUMER_MAX_DELIVER`` attempts is
dead-lettered by the runtime; our hook then records FAILED and emits ``mail.failed``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Query, Response
from fastapi.responses import JSONResponse
from prometheus_client import REGISTRY, CollectorRegistry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from postroom_contracts import (
    BlobRef,
    DocumentRef,
    DocumentStored,
    MailFailed,
    MailParsed,
    MailReceived,
    derive_event_id,
)
from postroom_runtime import (
    BlobNotFound,
    BlobStore,
    Outbox,
    PoisonMessage,
    ServiceRuntime,
    WorkerDied,
    load_settings,
    problem,
)
from postroom_runtime.store import utcnow

from . import store
from .config import ExtractorSettings
from .handlers import SUPPORTED_TYPES, Attachment, ParsedMail, parse_mail
from .spec import SERVICE
from .store import Status

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
# The durable JetStream consumer and idempotency scope, fixed in spec.py (never renamed: a new
# name would start again from the beginning of the stream).
CONSUMER = SERVICE.durable_for(MailReceived)
MAX_PAGE = 500


def document_id(mail_key: str, index: int) -> str:
    """Derived, never random: a redelivered mail yields the same document ids."""
    return derive_event_id(mail_key, "document", str(index))


def document_ref(mail_key: str, attachment: Attachment, blob: BlobRef) -> DocumentRef:
    """An attachment as mail.parsed lists it (what its document.stored event says)."""
    return DocumentRef(
        document_id=document_id(mail_key, attachment.index), index=attachment.index,
        filename=attachment.filename,
        content_type=attachment.sniffed_type or attachment.declared_type,
        size=attachment.size, sha256=blob.sha256, blob=blob,
    )


def failure_stage(error: str) -> str:
    """Where a dead-lettered mail failed, from the runtime's error text."""
    if error.startswith(("BlobNotFound", "BlobCorrupt")):
        return "fetch"
    if error.startswith("poison: cannot parse"):
        return "parse"
    return "extract"


@dataclass
class Prepared:
    """What ``Extractor.prepare`` did for a mail outside the transaction."""

    parsed: ParsedMail
    refs: list[BlobRef]
    received_at: datetime
    stored_at: datetime
    parsed_at: datetime


class Extractor:
    """The consumer's prepare step, its handler and its dead-letter hook."""

    def __init__(self, runtime: ServiceRuntime, settings: ExtractorSettings) -> None:
        self.runtime = runtime
        self.limits = settings.limits()

    @property
    def blobs(self) -> BlobStore:
        if self.runtime.blobs is None:
            raise RuntimeError("blob store not started")
        return self.runtime.blobs

    async def prepare(self, event: MailReceived) -> Prepared:
        """Before the transaction, several mails at once: fetch, parse, store the attachments
        (content-addressed: doing it again after a crash stores nothing new)."""
        received_at = utcnow()
        raw = await self.blobs.get(event.raw)  # missing or corrupt: raises, retried
        stored_at = utcnow()
        try:  # in a worker process: another core, and stopped at the time limit
            parsed = await self.runtime.run_cpu(parse_mail, raw, self.limits)
        except WorkerDied:
            raise  # not the mail's fault: retried
        except Exception as exc:  # deterministic: retrying cannot help
            raise PoisonMessage(f"cannot parse mail: {type(exc).__name__}: {exc}") from exc
        refs = list(await asyncio.gather(*(
            self.blobs.put(a.data, content_type=a.sniffed_type or a.declared_type)
            for a in parsed.attachments)))
        return Prepared(parsed, refs, received_at, stored_at, utcnow())

    async def handle(self, event: MailReceived, session: AsyncSession, outbox: Outbox,
                     prepared: Prepared) -> None:
        """In the transaction: the mail's rows and events."""
        key = event.mail_key
        parsed, refs = prepared.parsed, prepared.refs
        received_at, stored_at, parsed_at = (prepared.received_at, prepared.stored_at,
                                             prepared.parsed_at)
        docs = [dict(
            document_id=document_id(key, attachment.index), tenant=event.tenant, mail_key=key,
            index=attachment.index, filename=attachment.filename,
            declared_type=attachment.declared_type, sniffed_type=attachment.sniffed_type,
            size=attachment.size, sha256=ref.sha256, blob_bucket=ref.bucket, blob_key=ref.key,
            supported=attachment.supported, metadata=attachment.metadata.model_dump(mode="json"),
            created_at=parsed_at,
        ) for attachment, ref in zip(parsed.attachments, refs, strict=True)]
        # the usual case, a new mail: all its rows at once
        if not await store.record_parsed(
                session, key=key, tenant=event.tenant, message_id=event.message_id,
                received_at=event.occurred_at, at=(received_at, stored_at, parsed_at),
                defects=parsed.defects, docs=docs):
            existing = await store.get_mail(session, key)
            if existing.status == Status.PARSED:
                # another mail.received for a mail we already parsed (a re-sent mail)
                log.info("mail already parsed; repeated mail.received ignored")
                return
            # a mail given up on before (FAILED), delivered again
            await store.receive_mail(session, key=key, tenant=event.tenant,
                                     message_id=event.message_id,
                                     received_at=event.occurred_at, at=received_at)
            await store.transition(session, key, Status.STORED, stored_at)
            for doc in docs:
                await store.add_document(session, **doc)
            await store.transition(session, key, Status.PARSED, parsed_at, error=None,
                                   defects=parsed.defects, document_count=len(docs))
        document_ids: list[str] = []
        for attachment, ref, doc in zip(parsed.attachments, refs, docs, strict=True):
            doc_id = doc["document_id"]
            await outbox.emit(DocumentStored.caused_by(
                event, part=str(attachment.index), document_id=doc_id, index=attachment.index,
                filename=attachment.filename, declared_content_type=attachment.declared_type,
                sniffed_content_type=attachment.sniffed_type, size=attachment.size,
                sha256=ref.sha256, blob=ref, supported=attachment.supported,
                metadata=attachment.metadata,
            ))
            document_ids.append(doc_id)
        await outbox.emit(MailParsed.caused_by(
            event, message_id=event.message_id, subject=event.subject,
            header_from=event.header_from, in_reply_to=parsed.in_reply_to,
            references=parsed.references, document_ids=document_ids,
            skipped_parts=parsed.skipped_parts, body_text=parsed.body_text,
            body_text_truncated=parsed.body_text_truncated, has_html=parsed.has_html,
            defects=parsed.defects, actions=list(event.actions),
            documents=[document_ref(key, a, ref)
                       for a, ref in zip(parsed.attachments, refs, strict=True)],
            route=event.route, raw=event.raw, envelope_from=event.envelope_from,
        ))
        log.info("mail parsed", extra={
            "documents": len(document_ids), "skipped_parts": parsed.skipped_parts,
            "defects": len(parsed.defects)})

    async def on_dead_letter(self, event: MailReceived | None, error: str) -> None:
        """The runtime gave up on a mail: record FAILED and emit mail.failed (once)."""
        if event is None:
            return  # undecodable: no mail to speak of; the dead letter keeps the bytes
        key = event.mail_key
        stage = failure_stage(error)
        at = utcnow()
        async with self.runtime.store.transaction() as session:
            existing = await store.get_mail(session, key)
            if existing is not None and existing.status == Status.PARSED:
                # e.g. the ack of a processed message was lost on the last attempt
                log.warning("dead-lettered mail is already parsed; status kept")
                return
            if existing is None or existing.status == Status.FAILED:
                await store.receive_mail(session, key=key, tenant=event.tenant,
                                         message_id=event.message_id,
                                         received_at=event.occurred_at, at=at)
            if stage != "fetch":
                await store.transition(session, key, Status.STORED, at)
            await store.transition(session, key, Status.FAILED, at, error=error[:4000])
            failed = MailFailed.caused_by(event, stage=stage, error=error[:4000])
            already = await session.scalar(
                select(store.outbox.c.id).where(store.outbox.c.event_id == failed.event_id))
            if already is None:
                await Outbox(session, store.outbox).emit(failed)
        log.error("mail failed", extra={"stage": stage})


# --- HTTP API -------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    value = store.utc(value)
    return value.isoformat() if value is not None else None


def document_json(row: Any) -> dict[str, Any]:
    m = row._mapping
    return {
        "document_id": m["document_id"],
        "tenant": m["tenant"],
        "mail_key": m["mail_key"],
        "index": m["index"],
        "filename": m["filename"],
        "declared_content_type": m["declared_type"],
        "sniffed_content_type": m["sniffed_type"],
        "size": m["size"],
        "sha256": m["sha256"],
        "supported": m["supported"],
        "metadata": m["metadata"],
        "blob": {"bucket": m["blob_bucket"], "key": m["blob_key"]},
        "created_at": _iso(m["created_at"]),
        "content_url": f"/documents/{m['document_id']}/content",
    }


def mail_json(row: Any) -> dict[str, Any]:
    m = row._mapping
    return {
        "mail_key": m["mail_key"],
        "tenant": m["tenant"],
        "message_id": m["message_id"],
        "status": m["status"],
        "error": m["error"],
        "defects": m["defects"],
        "document_count": m["document_count"],
        "received_at": _iso(m["received_at"]),
        "updated_at": _iso(m["updated_at"]),
    }


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback name and the exact UTF-8 name (RFC 6266)."""
    fallback = "".join(
        ch if 0x20 <= ord(ch) < 0x7F and ch not in '"\\;' else "_" for ch in filename
    ) or "document"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def add_routes(app: FastAPI, runtime: ServiceRuntime) -> None:
    @app.get("/documents")
    async def list_documents(
        tenant: str | None = None,
        mail_key: str | None = None,
        limit: int = Query(100, ge=1, le=MAX_PAGE),
        offset: int = Query(0, ge=0),
    ) -> list[dict[str, Any]]:
        """Documents, newest first (those of one mail in attachment order)."""
        async with runtime.store.sessions() as session:
            rows = await store.list_documents(session, tenant=tenant, mail_key=mail_key,
                                              limit=limit, offset=offset)
        return [document_json(row) for row in rows]

    @app.get("/documents/{document_id}", response_model=None)
    async def get_document(document_id: str) -> dict[str, Any] | JSONResponse:
        async with runtime.store.sessions() as session:
            row = await store.get_document(session, document_id)
        if row is None:
            return problem(404, "Document not found", f"no document {document_id!r}")
        return document_json(row)

    @app.get("/documents/{document_id}/content", response_model=None)
    async def get_content(document_id: str) -> Response:
        async with runtime.store.sessions() as session:
            row = await store.get_document(session, document_id)
        if row is None:
            return problem(404, "Document not found", f"no document {document_id!r}")
        m = row._mapping
        ref = BlobRef(bucket=m["blob_bucket"], key=m["blob_key"], size=m["size"],
                      sha256=m["sha256"])
        if runtime.blobs is None:
            return problem(503, "Not ready", "blob store not started")
        try:
            data = await runtime.blobs.get(ref)
        except BlobNotFound:
            return problem(500, "Content missing",
                           f"the content of document {document_id!r} is not in the blob store")
        # Only types we know are served as themselves; anything else (HTML, SVG, scripts)
        # is a download of opaque bytes, never rendered by a browser from our origin.
        sniffed = m["sniffed_type"]
        media_type = sniffed if sniffed in SUPPORTED_TYPES else "application/octet-stream"
        return Response(data, media_type=media_type, headers={
            "Content-Disposition": content_disposition(m["filename"]),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "ETag": f'"{m["sha256"]}"',
        })

    @app.get("/mails")
    async def list_mails(
        tenant: str | None = None,
        status: Status | None = None,
        limit: int = Query(100, ge=1, le=MAX_PAGE),
        offset: int = Query(0, ge=0),
    ) -> list[dict[str, Any]]:
        """Mails, newest first; ``status=FAILED`` lists the ones given up on."""
        async with runtime.store.sessions() as session:
            rows = await store.list_mails(session, tenant=tenant,
                                          status=status.value if status else None,
                                          limit=limit, offset=offset)
        return [mail_json(row) for row in rows]

    @app.get("/mails/{mail_key}", response_model=None)
    async def get_mail(mail_key: str) -> dict[str, Any] | JSONResponse:
        async with runtime.store.sessions() as session:
            row = await store.get_mail(session, mail_key)
            if row is None:
                return problem(404, "Mail not found", f"no mail {mail_key!r}")
            transitions = await store.transitions_of(session, mail_key)
            docs = await store.list_documents(session, mail_key=mail_key, limit=10_000)
        body = mail_json(row)
        body["transitions"] = [{"status": t.status, "at": _iso(t.at)} for t in transitions]
        body["documents"] = [document_json(d) for d in docs]
        return body


def build_runtime(
    settings: ExtractorSettings | None = None,
    *,
    registry: CollectorRegistry = REGISTRY,
    configure_logging: bool = True,
) -> ServiceRuntime:
    """The service, ready for ``await runtime.start()`` (or ``postroom_runtime.run``)."""
    settings = settings or load_settings(ExtractorSettings)
    runtime = ServiceRuntime(settings, migrations=MIGRATIONS, registry=registry,
                             configure_logging=configure_logging)
    extractor = Extractor(runtime, settings)
    runtime.consume(MailReceived, extractor.handle, durable=CONSUMER,
                    processed=store.processed_messages,
                    outbox=store.outbox, on_dead_letter=extractor.on_dead_letter,
                    prepare=extractor.prepare)
    add_routes(runtime.http, runtime)
    return runtime
