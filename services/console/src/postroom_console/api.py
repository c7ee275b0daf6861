"""The console's HTTP API (``/api/v1``, ``/results``) and WebSocket feed.

Every route resolves the caller's key first; a tenant key's queries are filtered on its tenant
in SQL, so another tenant's mail is simply not found (404, never 403).
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import math
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
import nh3
from fastapi import FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response
from nats.js.errors import NotFoundError
from pydantic import BaseModel, Field
from sqlalchemy import bindparam, false, func, literal_column, select, text, tuple_, update
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from postroom_contracts import (
    CLASSIFICATION_LABELS,
    DLQ_STREAM,
    EVENTS_STREAM,
    BlobRef,
    DocumentStored,
    MailAuthenticated,
    MailLabelCorrected,
    MailParsed,
    ReplyReviewed,
    ReplySkipped,
    VoicemailTranscribed,
    derive_event_id,
)
from postroom_runtime import Outbox, ServiceRuntime, problem
from postroom_runtime.deadletters import list_dead_letters, replay_dead_letter
from postroom_runtime.store import utcnow
from postroom_runtime.tenants import list_tenants

from . import auth, store
from .auth import Principal
from .feed import RESYNC, Broadcaster
from .handlers import (
    REVIEWABLE,
    SENDER_SEPARATOR,
    decode_cursor,
    encode_cursor,
    event_summary,
    feed_message,
    fold,
    iso,
    reply_json,
    seed_result,
    summary,
    utc,
)
from .projector import Projector

MAX_PAGE = 500
SEARCH_FTS_MAX = 500  # SQLite: the FTS5 table serves a search with at most this many matches
STATS_FRESH_SECONDS = 2.0
STATS_IDLE_SECONDS = 30.0
HTML_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data: cid:; sandbox"


@dataclass(frozen=True)
class TextSearch:
    """A substring filter of the mail list served by an index: ``mails.<column>`` holds the
    case-folded text (written by the projector); PostgreSQL: a ``pg_trgm`` GIN index on it;
    SQLite: the FTS5 trigram table ``fts`` kept by triggers (same rowid as ``mails``)."""

    name: str  # of its bind parameters
    column: str
    fts: str
    separator: str | None = None  # between the parts of the text; never in what is sought


SUBJECT_SEARCH = TextSearch("subject", "subject_search", "mails_subject_fts")  # 0002
SENDER_SEARCH = TextSearch("sender", "sender_search", "mails_sender_fts",  # 0004
                           separator=SENDER_SEPARATOR)


class ApiProblem(Exception):
    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


def unauthorized() -> ApiProblem:
    return ApiProblem(401, "Unauthorized", "a valid API key is required "
                      "(Authorization: Bearer <key> or X-API-Key)")


def not_found(what: str) -> ApiProblem:
    return ApiProblem(404, "Not found", f"no such {what}")


class NewKey(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    tenant: str | None = Field(default=None, max_length=63)


class LabelCorrection(BaseModel):
    label: str


class ReplyReview(BaseModel):
    decision: Literal["approved", "rejected"]
    body_text: str | None = Field(default=None, max_length=100_000, description=(
        "The draft's text as edited (approved only); omitted: sent as drafted"))
    reason: str | None = Field(default=None, max_length=2000)


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("x-api-key")


class Api:
    def __init__(self, runtime: ServiceRuntime, projector: Projector,
                 broadcaster: Broadcaster, *, ws_backlog: int,
                 mailbox_sync_url: str | None = None,
                 mailbox_sync_token: str | None = None,
                 mailbox_sync_token_file: str | None = None) -> None:
        self.mailbox_sync_url = mailbox_sync_url
        self.mailbox_sync_token = mailbox_sync_token
        self.mailbox_sync_token_file = mailbox_sync_token_file
        self.runtime = runtime
        self.projector = projector
        self.broadcaster = broadcaster
        self.ws_backlog = ws_backlog
        self._stats_cache: dict[tuple[Any, ...], tuple[float, int, dict[str, Any]]] = {}

    # -- helpers -------------------------------------------------------------------------------

    async def principal(self, request: Request, *, allow_query: bool = False) -> Principal:
        """The caller's key: the ``Authorization``/``X-API-Key`` header; where a browser cannot
        send one (frames, WebSocket), also ``?ticket=`` (``POST /api/v1/tickets``) or
        ``?key=`` (kept for API clients; redacted in the logs)."""
        key = presented_key(request)
        async with self.runtime.store.sessions() as session:
            if key is None and allow_query:
                ticket = request.query_params.get("ticket")
                if ticket:
                    found = await auth.verify_ticket(session, ticket, time.time())
                    if found is None:
                        raise unauthorized()
                    return found
                key = request.query_params.get("key")
            found = await auth.verify(session, key)
        if found is None:
            raise unauthorized()
        return found

    async def admin(self, request: Request) -> Principal:
        who = await self.principal(request)
        if not who.admin:
            raise ApiProblem(403, "Forbidden", "an admin key is required")
        return who

    @staticmethod
    def scoped(query: Any, column: Any, who: Principal, tenant: str | None = None) -> Any:
        """Filter on the key's tenant (a tenant key asking for another tenant sees nothing)."""
        if who.tenant is not None:
            query = query.where(column == who.tenant)
            if tenant is not None and tenant != who.tenant:
                query = query.where(column != who.tenant)  # empty
        elif tenant is not None:
            query = query.where(column == tenant)
        return query

    async def mail_row(self, who: Principal, mail_key: str) -> dict[str, Any]:
        m = store.mails
        query = self.scoped(select(m).where(m.c.mail_key == mail_key), m.c.tenant, who)
        async with self.runtime.store.sessions() as session:
            row = (await session.execute(query)).first()
        if row is None:
            raise not_found("mail")
        return dict(row._mapping)

    async def timeline_of(self, who: Principal, mail_key: str) -> list[dict[str, Any]]:
        t = store.timeline
        query = self.scoped(select(t).where(t.c.mail_key == mail_key), t.c.tenant, who)
        async with self.runtime.store.sessions() as session:
            rows = (await session.execute(query.order_by(t.c.sequence))).all()
        return [dict(r._mapping) for r in rows]

    # -- mails ---------------------------------------------------------------------------------

    async def list_mails(self, who: Principal, *, tenant: str | None, label: str | None,
                         status: str | None, sender: str | None, since: datetime | None,
                         until: datetime | None, q: str | None, limit: int,
                         cursor: str | None) -> dict[str, Any]:
        m = store.mails
        query = self.scoped(select(m), m.c.tenant, who, tenant)
        if label:
            query = query.where(m.c.label == label)
        if status:
            query = query.where(m.c.status == status)
        if sender:
            query = query.where(await self.search_filter(SENDER_SEARCH, sender))
        if q:
            query = query.where(await self.search_filter(SUBJECT_SEARCH, q))
        if since is not None:
            query = query.where(m.c.received_at >= utc(since))
        if until is not None:
            query = query.where(m.c.received_at < utc(until))
        if cursor:
            try:
                at, key = decode_cursor(cursor)
                at = utc(datetime.fromisoformat(at))
            except (ValueError, TypeError) as exc:
                raise ApiProblem(400, "Bad request", "invalid cursor") from exc
            query = query.where(tuple_(m.c.received_at, m.c.mail_key) < tuple_(at, key))
        query = query.order_by(m.c.received_at.desc(), m.c.mail_key.desc()).limit(limit + 1)
        async with self.runtime.store.sessions() as session:
            rows = [dict(r._mapping) for r in (await session.execute(query)).all()]
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            next_cursor = encode_cursor(utc(last["received_at"]), last["mail_key"])
        return {"items": [summary(r) for r in rows], "next_cursor": next_cursor}

    async def search_filter(self, search: TextSearch, term: str) -> Any:
        """``term`` anywhere in ``search``'s text (the subject; the sender's addresses),
        ignoring case (Unicode case folding, the same on both stores). PostgreSQL: the
        pattern is written into the statement, so the planner sees it and picks the trigram
        index for a rare term, the keyset walk for a common one (a generic prepared plan would
        walk for both). SQLite: the FTS5 trigram table when a bounded probe finds at most
        SEARCH_FTS_MAX matches (then sorting them is cheap), else the walk down
        ``ix_mails_received``, which stops early for a common term; terms shorter than a
        trigram always walk. A term holding the text's separator, or a NUL (never stored:
        ``store.fit``; PostgreSQL refuses it in a statement), matches nothing."""
        needle = fold(term) or ""
        if "\x00" in needle or (search.separator is not None and search.separator in needle):
            return false()
        if self.runtime.store.is_sqlite and len(needle) >= 3:
            phrase = '"' + needle.replace('"', '""') + '"'
            async with self.runtime.store.sessions() as session:
                probe = (await session.execute(text(
                    f"SELECT count(*) FROM (SELECT 1 FROM {search.fts} "
                    f"WHERE {search.fts} MATCH :phrase LIMIT :most)"),
                    {"phrase": phrase, "most": SEARCH_FTS_MAX + 1})).scalar_one()
            if probe <= SEARCH_FTS_MAX:
                return literal_column("mails.rowid").in_(
                    text(f"SELECT rowid FROM {search.fts} "
                         f"WHERE {search.fts} MATCH :{search.name}_phrase")
                    .bindparams(**{f"{search.name}_phrase": phrase})
                    .columns(literal_column("rowid")))
        pattern = "%" + needle.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"
        literal = not self.runtime.store.is_sqlite
        return store.mails.c[search.column].like(
            bindparam(f"{search.name}_pattern", pattern, literal_execute=literal), escape="/")

    async def mail_detail(self, who: Principal, mail_key: str) -> dict[str, Any]:
        row = await self.mail_row(who, mail_key)
        events = await self.timeline_of(who, mail_key)
        d = store.deliveries
        async with self.runtime.store.sessions() as session:
            deliveries = [dict(r._mapping) for r in (await session.execute(
                select(d).where(d.c.mail_key == mail_key, d.c.tenant == row["tenant"])
                .order_by(d.c.sequence))).all()]
        received = utc(row["received_at"])
        base = f"/api/v1/mails/{urllib.parse.quote(mail_key, safe='')}"
        out = summary(row)
        authentication = None
        body_text = ""
        documents, transcripts, skipped, timeline = [], [], [], []
        r = store.replies
        async with self.runtime.store.sessions() as session:
            replies = [reply_json(dict(x._mapping), full=True) for x in (await session.execute(
                select(r).where(r.c.mail_key == mail_key, r.c.tenant == row["tenant"])
                .order_by(r.c.sequence))).all()]
        for e in events:
            p = e["payload"]
            at = utc(e["occurred_at"])
            timeline.append({
                "sequence": e["sequence"], "event_type": e["event_type"],
                "event_id": e["event_id"], "occurred_at": iso(at),
                "since_received_ms": (round((at - received).total_seconds() * 1000, 3)
                                      if at and received else None),
                "trace_id": e["trace_id"], "summary": event_summary(e["event_type"], p),
                "payload": p,
            })
            if e["event_type"] == MailAuthenticated.event_type:
                authentication = p
            elif e["event_type"] == MailParsed.event_type:
                body_text = p.get("body_text") or ""
            elif e["event_type"] == DocumentStored.event_type:
                doc_id = urllib.parse.quote(str(p.get("document_id", "")), safe="")
                documents.append({**p, "download_url": f"{base}/documents/{doc_id}"})
            elif e["event_type"] == VoicemailTranscribed.event_type:
                transcripts.append(p)
            elif e["event_type"] == ReplySkipped.event_type:
                skipped.append(p)
        classification = None
        if row["label"] is not None:
            classification = {**seed_result(row), "scores": row["scores"] or {},
                              "model_version": row["model_version"],
                              "spam_score": row["spam_score"],
                              "corrected_label": row["corrected_label"],
                              "corrected_by": row["corrected_by"]}
        out.update(
            scores=row["scores"], model_version=row["model_version"],
            spam_score=row["spam_score"], authentication=authentication, timeline=timeline,
            documents=documents, transcripts=transcripts, classification=classification,
            replies=replies, replies_skipped=skipped,
            deliveries=[{"delivery_id": x["delivery_id"], "kind": x["kind"], "to": x["to"],
                         "status": x["status"], "at": iso(x["finished_at"] or
                                                          x["requested_at"]),
                         "requested_at": iso(x["requested_at"]),
                         "finished_at": iso(x["finished_at"]), "relay": x["relay"],
                         "error": x["error"], "message_id": x["message_id"]}
                        for x in deliveries],
            body_text=body_text, html_url=f"{base}/html" if row["has_html"] else None,
        )
        out["deliveries_count"] = row["deliveries"]
        return out

    async def document(self, who: Principal, mail_key: str, document_id: str) -> Response:
        for e in await self.timeline_of(who, mail_key):
            p = e["payload"]
            if e["event_type"] == DocumentStored.event_type and p.get("document_id") == document_id:
                break
        else:
            raise not_found("document")
        blobs = self.runtime.blobs
        if blobs is None:
            raise ApiProblem(503, "Unavailable", "blob store not started")
        data = await blobs.get(BlobRef.model_validate(p["blob"]))
        filename = str(p.get("filename") or document_id)
        disposition = ("attachment; filename=\"" + _ascii(filename) + "\"; filename*=UTF-8''"
                       + urllib.parse.quote(filename, safe=""))
        return Response(data, media_type="application/octet-stream", headers={
            "Content-Disposition": disposition, "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "X-Postroom-Content-Type": str(p.get("sniffed_content_type")
                                           or p.get("declared_content_type") or "")})

    async def html(self, who: Principal, mail_key: str) -> Response:
        row = await self.mail_row(who, mail_key)
        if not row["raw"]:
            raise not_found("HTML body")
        blobs = self.runtime.blobs
        if blobs is None:
            raise ApiProblem(503, "Unavailable", "blob store not started")
        raw = await blobs.get(BlobRef.model_validate(row["raw"]))
        body = sanitized_html(raw)
        if body is None:
            raise not_found("HTML body")
        return Response(body, media_type="text/html; charset=utf-8", headers={
            "Content-Security-Policy": HTML_CSP, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "Cache-Control": "private, no-store"})

    async def correct_label(self, who: Principal, mail_key: str, label: str) -> dict[str, Any]:
        if label not in CLASSIFICATION_LABELS:
            raise ApiProblem(422, "Invalid request",
                             f"label must be one of {', '.join(CLASSIFICATION_LABELS)}")
        row = await self.mail_row(who, mail_key)
        correction_id = uuid.uuid4().hex
        previous = row["corrected_label"] or row["label"]
        event = MailLabelCorrected(
            event_id=derive_event_id(correction_id, MailLabelCorrected.event_type),
            tenant=row["tenant"], mail_key=mail_key, correction_id=correction_id,
            email_id=row["message_id"] or "", label=label,
            previous_label=previous if previous in CLASSIFICATION_LABELS else None,
            previous_model_version=row["model_version"], corrected_by=who.name,
            raw=BlobRef.model_validate(row["raw"]) if row["raw"] else None)
        async with self.runtime.store.transaction() as session:
            await session.execute(store.corrections.insert().values(
                correction_id=correction_id, mail_key=mail_key, tenant=row["tenant"],
                label=label, previous_label=event.previous_label, corrected_by=who.name,
                created_at=utcnow()))
            await Outbox(session=session, table=store.outbox).emit(event)
        self.runtime.relay_for(store.outbox).kick()
        return {"correction_id": correction_id, "event_id": event.event_id}

    # -- AI replies ----------------------------------------------------------------------------

    async def reply_row(self, who: Principal, reply_id: str) -> dict[str, Any]:
        r = store.replies
        query = self.scoped(select(r).where(r.c.reply_id == reply_id), r.c.tenant, who)
        async with self.runtime.store.sessions() as session:
            row = (await session.execute(query)).first()
        if row is None:
            raise not_found("reply")
        return dict(row._mapping)

    async def list_replies(self, who: Principal, *, status: str | None, tenant: str | None,
                           limit: int, cursor: str | None) -> dict[str, Any]:
        """Newest first; ``status`` one or several (comma-separated), ``awaiting`` for
        pending,held."""
        r, m = store.replies, store.mails
        query = self.scoped(select(r), r.c.tenant, who, tenant)
        if status:
            wanted = [x.strip() for x in status.split(",") if x.strip()]
            if "awaiting" in wanted:
                wanted = [x for x in wanted if x != "awaiting"] + list(REVIEWABLE)
            query = query.where(r.c.status.in_(wanted))
        if cursor:
            try:
                (before,) = decode_cursor(cursor)
                query = query.where(r.c.sequence < int(before))
            except (ValueError, TypeError) as exc:
                raise ApiProblem(400, "Bad request", "invalid cursor") from exc
        async with self.runtime.store.sessions() as session:
            rows = [dict(x._mapping) for x in (await session.execute(
                query.order_by(r.c.sequence.desc()).limit(limit + 1))).all()]
            keys = {x["mail_key"] for x in rows}
            mails = {}
            if keys:
                mails = {x.mail_key: dict(x._mapping) for x in (await session.execute(
                    select(m).where(m.c.mail_key.in_(keys)))).all()}
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = encode_cursor(rows[-1]["sequence"])
        items = []
        for x in rows:
            mail = mails.get(x["mail_key"])
            items.append({**reply_json(x), "mail": summary(mail) if mail else None})
        return {"items": items, "next_cursor": next_cursor}

    async def reply_detail(self, who: Principal, reply_id: str) -> dict[str, Any]:
        row = await self.reply_row(who, reply_id)
        m = store.mails
        async with self.runtime.store.sessions() as session:
            mail = (await session.execute(select(m).where(
                m.c.mail_key == row["mail_key"], m.c.tenant == row["tenant"]))).first()
        return {**reply_json(row, full=True),
                "mail": summary(dict(mail._mapping)) if mail else None}

    async def review_reply(self, who: Principal, reply_id: str,
                           body: ReplyReview) -> dict[str, Any]:
        """Publish reply.reviewed once per reply (409 for a second decision, here or one the
        stream already carries)."""
        row = await self.reply_row(who, reply_id)
        if row["status"] not in REVIEWABLE:
            raise ApiProblem(409, "Conflict", f"reply is {row['status']}, not awaiting review")
        edited = body.body_text if body.decision == "approved" else None
        if edited is not None and edited == (row["draft_text"] or ""):
            edited = None  # unchanged: sent as drafted
        event = ReplyReviewed(
            event_id=derive_event_id(reply_id, ReplyReviewed.event_type),
            tenant=row["tenant"], mail_key=row["mail_key"], reply_id=reply_id,
            decision=body.decision, reviewed_by=who.name, body_text=edited,
            reason=body.reason or None)
        try:
            async with self.runtime.store.transaction() as session:
                await session.execute(store.reply_reviews.insert().values(
                    reply_id=reply_id, mail_key=row["mail_key"], tenant=row["tenant"],
                    decision=body.decision, reviewed_by=who.name, created_at=utcnow()))
                await Outbox(session=session, table=store.outbox).emit(event)
        except IntegrityError as exc:
            raise ApiProblem(409, "Conflict", "reply already reviewed") from exc
        self.runtime.relay_for(store.outbox).kick()
        return {"reply_id": reply_id, "decision": body.decision, "event_id": event.event_id}

    # -- mailboxes (mailbox-sync's accounts) ---------------------------------------------------

    async def mailboxes(self, who: Principal) -> dict[str, Any]:
        """mailbox-sync's accounts (``GET <CONSOLE_MAILBOX_SYNC_URL>/api/v1/accounts``: each
        account without its credentials, with ``status`` {state, last_error, folders}); a
        tenant key sees its tenant's."""
        if not self.mailbox_sync_url:
            return {"configured": False, "accounts": []}
        url = self.mailbox_sync_url.rstrip("/") + "/api/v1/accounts"
        token = self.mailbox_sync_token
        if not token and self.mailbox_sync_token_file:
            # mailbox-sync writes it at its first start, maybe after the console's
            with contextlib.suppress(OSError):
                token = (await asyncio.to_thread(
                    Path(self.mailbox_sync_token_file).read_text)).strip()
        try:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with httpx.AsyncClient(timeout=5) as http:
                response = await http.get(url, headers=headers)
                response.raise_for_status()
                found = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            return {"configured": True, "reachable": False, "accounts": [],
                    "error": f"{type(exc).__name__}: {exc}"[:300]}
        accounts = found.get("accounts", found) if isinstance(found, dict) else found
        if not isinstance(accounts, list):
            accounts = []
        if who.tenant is not None:
            accounts = [a for a in accounts if isinstance(a, dict)
                        and a.get("tenant") == who.tenant]
        return {"configured": True, "reachable": True, "accounts": accounts}

    async def result(self, who: Principal, email_id: str) -> dict[str, Any]:
        m = store.mails
        query = self.scoped(select(m).where(m.c.message_id == email_id, m.c.label.is_not(None)),
                            m.c.tenant, who)
        async with self.runtime.store.sessions() as session:
            row = (await session.execute(
                query.order_by(m.c.classified_at.desc()).limit(1))).first()
        if row is None:
            raise not_found("classification for this email_id")
        return seed_result(dict(row._mapping))

    # -- stats ---------------------------------------------------------------------------------

    async def stats(self, who: Principal, tenant: str | None, hours: int) -> dict[str, Any]:
        """The figures of the mails are computed at most every STATS_FRESH_SECONDS per
        (key's tenant, tenant, hours) while the projection moves, and reused up to
        STATS_IDLE_SECONDS while it does not: with 100,000 mails in the window they take a
        second on SQLite, and every open dashboard asks for them."""
        key = (who.tenant, tenant, hours)
        now = time.monotonic()
        cached = self._stats_cache.get(key)
        position = self.projector.position
        if cached is not None and (now - cached[0] < STATS_FRESH_SECONDS or (
                cached[1] == position and now - cached[0] < STATS_IDLE_SECONDS)):
            figures = cached[2]
        else:
            figures = await self._mail_stats(who, tenant, hours)
            if len(self._stats_cache) > 1000:
                self._stats_cache.clear()
            self._stats_cache[key] = (now, position, figures)
        consumers: list[dict[str, Any]] = []
        if who.admin:
            consumers = await self.consumers()
        with contextlib.suppress(Exception):
            await self.projector.refresh_stream_last()
        return {**figures, "consumers": consumers, "projection": self.projection_state()}

    async def _mail_stats(self, who: Principal, tenant: str | None,
                          hours: int) -> dict[str, Any]:
        m = store.mails
        now = utcnow()
        since = now - timedelta(hours=hours)
        days_since = (now - timedelta(days=30)).replace(hour=0, minute=0, second=0,
                                                        microsecond=0)
        sqlite = self.runtime.store.is_sqlite

        def bucket(fmt_sqlite: str, trunc: str, fmt_pg: str) -> Any:
            if sqlite:
                return func.strftime(fmt_sqlite, m.c.received_at)
            return func.to_char(func.date_trunc(trunc, func.timezone("UTC", m.c.received_at)),
                                fmt_pg)

        hour = bucket("%Y-%m-%dT%H:00:00Z", "hour", 'YYYY-MM-DD"T"HH24:00:00"Z"')
        day = bucket("%Y-%m-%d", "day", "YYYY-MM-DD")
        label = func.coalesce(m.c.corrected_label, m.c.label)

        def scoped(query: Any) -> Any:
            return self.scoped(query, m.c.tenant, who, tenant)

        async with self.runtime.store.sessions() as session:
            totals = (await session.execute(scoped(select(
                func.count(),
                func.count().filter(m.c.status == "classified"),
                func.count().filter(m.c.status == "failed"),
            ).where(m.c.received_at >= since)))).one()
            per_hour = (await session.execute(scoped(
                select(hour, func.count()).where(m.c.received_at >= since)
                .group_by(hour).order_by(hour)))).all()
            per_day = (await session.execute(scoped(
                select(day, func.count()).where(m.c.received_at >= days_since)
                .group_by(day).order_by(day)))).all()
            per_label = (await session.execute(scoped(
                select(label, func.count()).where(m.c.received_at >= since, label.is_not(None))
                .group_by(label)))).all()
            latencies = (await session.execute(scoped(
                select(m.c.processing_ms).where(m.c.received_at >= since,
                                                m.c.processing_ms.is_not(None))
                .order_by(m.c.processing_ms)))).scalars().all()
        mails, classified, failed = (int(x) for x in totals)
        done = classified + failed
        return {
            "totals": {"mails": mails, "classified": classified, "failed": failed,
                       "success_rate": round(classified / done, 4) if done else None},
            "per_hour": [{"hour": h, "count": int(n)} for h, n in per_hour],
            "per_day": [{"day": d_, "count": int(n)} for d_, n in per_day],
            "per_label": {str(k): int(n) for k, n in per_label},
            "processing_ms": {f"p{p}": percentile(latencies, p) for p in (50, 95, 99)},
        }

    def projection_state(self) -> dict[str, Any]:
        p = self.projector
        return {"position": p.position, "stream_last": p.stream_last, "lag": p.lag,
                "running": p.running, "rebuilt_at": iso(p.rebuilt_at),
                "role": "leader" if p.leader else "follower", "fed": p.live_position,
                "analyzed_at": iso(p.analyzed_at)}

    async def consumers(self) -> list[dict[str, Any]]:
        try:
            infos = await self.runtime.js.consumers_info(EVENTS_STREAM)
        except Exception:
            return []
        out = []
        for info in infos:
            if not info.config.durable_name:
                continue  # ephemeral (this projection's ordered consumer, tools)
            last = info.delivered.last_active if info.delivered else None
            out.append({"stream": EVENTS_STREAM, "name": info.name,
                        "pending": info.num_pending or 0,
                        "ack_pending": info.num_ack_pending or 0,
                        "redelivered": info.num_redelivered or 0,
                        "last_active": iso(last) if isinstance(last, datetime) else last})
        return sorted(out, key=lambda c: c["name"])

    # -- feed ----------------------------------------------------------------------------------

    async def backlog(self, who: Principal, since: int, limit: int) -> list[dict[str, Any]]:
        t, m = store.timeline, store.mails
        query = self.scoped(select(t).where(t.c.sequence > since), t.c.tenant, who)
        async with self.runtime.store.sessions() as session:
            rows = [dict(r._mapping) for r in (await session.execute(
                query.order_by(t.c.sequence).limit(limit))).all()]
            keys = {r["mail_key"] for r in rows}
            mails = {}
            if keys:
                mails = {r.mail_key: dict(r._mapping) for r in (await session.execute(
                    select(m).where(m.c.mail_key.in_(keys)))).all()}
        return [feed_message(r, mails.get(r["mail_key"])) for r in rows]

    async def websocket(self, ws: WebSocket) -> None:
        ticket = ws.query_params.get("ticket")
        async with self.runtime.store.sessions() as session:
            if ticket:
                who = await auth.verify_ticket(session, ticket, time.time())
            else:
                who = await auth.verify(session, ws.query_params.get("key"))
        await ws.accept()
        if who is None:
            await ws.send_json({"type": "error", "status": 401, "title": "Unauthorized"})
            await ws.close(code=4401)
            return
        since_raw = ws.query_params.get("since")
        client = self.broadcaster.connect(who.tenant)
        # every event after this one is queued for the client from here on
        connected_at = self.projector.live_position
        last_sent = -1
        try:
            if since_raw not in (None, ""):
                try:
                    since = int(since_raw)
                except ValueError:
                    since = 0
                backlog = await self.backlog(who, since, self.ws_backlog + 1)
                if len(backlog) > self.ws_backlog:
                    await ws.send_json(RESYNC)
                    last_sent = self.projector.live_position
                else:
                    for message in backlog:
                        await ws.send_json(message)
                        last_sent = message["sequence"]
            # the backlog is out: from ``position`` on, the client gets every event live
            await ws.send_json({"type": "hello", "position": max(last_sent, connected_at),
                                "tenant": who.tenant})
            reader = asyncio.create_task(_drain(ws))
            try:
                while True:
                    getter = asyncio.create_task(client.queue.get())
                    done, _ = await asyncio.wait({getter, reader},
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if reader in done:
                        getter.cancel()
                        return
                    item = getter.result()
                    if isinstance(item, dict):  # RESYNC
                        await ws.send_json(RESYNC)
                        await ws.close(code=4000)
                        return
                    sequence, text = item
                    if sequence <= last_sent:
                        continue
                    await ws.send_text(text)
                    last_sent = sequence
            finally:
                reader.cancel()
        except (WebSocketDisconnect, RuntimeError, OSError):
            return  # the client went away (while we were sending)
        finally:
            self.broadcaster.disconnect(client)

    # -- routes --------------------------------------------------------------------------------

    def add_routes(self, app: FastAPI) -> None:
        api = self

        @app.exception_handler(ApiProblem)
        async def api_problem(_: Request, exc: ApiProblem) -> Response:
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            response = problem(exc.status, exc.title, exc.detail)
            if headers:
                response.headers.update(headers)
            return response

        @app.exception_handler(StarletteHTTPException)
        async def http_problem(_: Request, exc: StarletteHTTPException) -> Response:
            return problem(exc.status_code, str(exc.detail), str(exc.detail))

        @app.get("/api/v1/session")
        async def session(request: Request) -> dict[str, Any]:
            who = await api.principal(request)
            return {"name": who.name, "tenant": who.tenant, "admin": who.admin}

        @app.post("/api/v1/tickets", status_code=201)
        async def ticket(request: Request) -> dict[str, Any]:
            """A ticket for URLs (``?ticket=``: WebSocket, mail HTML, documents) instead of
            the key: valid for 60 s, scoped as the key that asked for it."""
            who = await api.principal(request)
            async with api.runtime.store.sessions() as s:
                value, expires = await auth.issue_ticket(s, who, time.time())
            return {"ticket": value, "expires_at": iso(datetime.fromtimestamp(expires, UTC)),
                    "expires_in": auth.TICKET_SECONDS}

        @app.get("/api/v1/keys")
        async def list_keys(request: Request) -> list[dict[str, Any]]:
            await api.admin(request)
            async with api.runtime.store.sessions() as s:
                rows = (await s.execute(select(store.api_keys)
                                        .order_by(store.api_keys.c.created_at))).all()
            return [auth.key_json(r) for r in rows]

        @app.post("/api/v1/keys", status_code=201)
        async def create_key(request: Request, body: NewKey) -> dict[str, Any]:
            await api.admin(request)
            async with api.runtime.store.transaction() as s:
                key_id, key = await auth.create(s, body.name, body.tenant)
            return {"key_id": key_id, "name": body.name, "tenant": body.tenant,
                    "admin": body.tenant is None, "key": key}

        @app.delete("/api/v1/keys/{key_id}")
        async def revoke_key(request: Request, key_id: str) -> dict[str, Any]:
            await api.admin(request)
            k = store.api_keys
            async with api.runtime.store.transaction() as s:
                result = await s.execute(update(k).where(k.c.key_id == key_id,
                                                         k.c.revoked_at.is_(None))
                                         .values(revoked_at=utcnow()))
            if not result.rowcount:
                raise not_found("key")
            return {"revoked": key_id}

        @app.get("/api/v1/mails")
        async def mails(
            request: Request, tenant: str | None = None, label: str | None = None,
            status: str | None = None, sender: str | None = None,
            since: datetime | None = None, until: datetime | None = None,
            q: str | None = None, limit: int = Query(50, ge=1, le=MAX_PAGE),
            cursor: str | None = None,
        ) -> dict[str, Any]:
            who = await api.principal(request)
            return await api.list_mails(who, tenant=tenant, label=label, status=status,
                                        sender=sender, since=since, until=until, q=q,
                                        limit=limit, cursor=cursor)

        @app.get("/api/v1/mails/{mail_key}")
        async def mail(request: Request, mail_key: str) -> dict[str, Any]:
            return await api.mail_detail(await api.principal(request), mail_key)

        @app.get("/api/v1/mails/{mail_key}/documents/{document_id}")
        async def document(request: Request, mail_key: str, document_id: str) -> Response:
            who = await api.principal(request, allow_query=True)
            return await api.document(who, mail_key, document_id)

        @app.get("/api/v1/mails/{mail_key}/html")
        async def html(request: Request, mail_key: str) -> Response:
            who = await api.principal(request, allow_query=True)
            return await api.html(who, mail_key)

        @app.post("/api/v1/mails/{mail_key}/label", status_code=202)
        async def label(request: Request, mail_key: str,
                        body: LabelCorrection) -> dict[str, Any]:
            return await api.correct_label(await api.principal(request), mail_key, body.label)

        @app.get("/api/v1/replies")
        async def replies(request: Request, status: str | None = None,
                          tenant: str | None = None,
                          limit: int = Query(50, ge=1, le=MAX_PAGE),
                          cursor: str | None = None) -> dict[str, Any]:
            return await api.list_replies(await api.principal(request), status=status,
                                          tenant=tenant, limit=limit, cursor=cursor)

        @app.get("/api/v1/replies/{reply_id}")
        async def reply(request: Request, reply_id: str) -> dict[str, Any]:
            return await api.reply_detail(await api.principal(request), reply_id)

        @app.post("/api/v1/replies/{reply_id}/review", status_code=202)
        async def review(request: Request, reply_id: str, body: ReplyReview) -> dict[str, Any]:
            return await api.review_reply(await api.principal(request), reply_id, body)

        @app.get("/api/v1/mailboxes")
        async def mailboxes(request: Request) -> dict[str, Any]:
            return await api.mailboxes(await api.principal(request))

        @app.get("/results/{email_id:path}")
        @app.get("/api/v1/results/{email_id:path}")
        async def result(request: Request, email_id: str) -> dict[str, Any]:
            return await api.result(await api.principal(request), email_id)

        @app.get("/api/v1/stats")
        async def stats(request: Request, tenant: str | None = None,
                        hours: int = Query(24, ge=1, le=24 * 90)) -> dict[str, Any]:
            return await api.stats(await api.principal(request), tenant, hours)

        @app.get("/api/v1/dead-letters")
        async def dead_letters(request: Request) -> list[dict[str, Any]]:
            await api.admin(request)
            letters = await list_dead_letters(api.runtime.js)
            return [{"sequence": s.sequence, "consumer": s.letter.consumer,
                     "original_subject": s.letter.original_subject,
                     "mail_key": s.letter.mail_key, "deliveries": s.letter.deliveries,
                     "error": s.letter.error, "failed_at": iso(s.letter.failed_at)}
                    for s in letters]

        @app.post("/api/v1/dead-letters/{sequence}/replay")
        async def replay(request: Request, sequence: int) -> dict[str, Any]:
            await api.admin(request)
            try:
                await replay_dead_letter(api.runtime.js, sequence)
            except NotFoundError as exc:
                raise not_found(f"dead letter in {DLQ_STREAM}") from exc
            return {"replayed": sequence}

        @app.get("/api/v1/tenants")
        async def tenants(request: Request) -> list[dict[str, Any]]:
            who = await api.principal(request)
            found = await list_tenants(api.runtime.js)
            return [t.model_dump(mode="json") for t in found
                    if who.tenant is None or t.slug == who.tenant]

        @app.get("/api/v1/outbox")
        async def outbox(request: Request, status: str | None = None,
                         tenant: str | None = None,
                         limit: int = Query(50, ge=1, le=MAX_PAGE),
                         cursor: str | None = None) -> dict[str, Any]:
            who = await api.principal(request)
            d = store.deliveries
            query = api.scoped(select(d), d.c.tenant, who, tenant)
            if status:
                query = query.where(d.c.status == status)
            if cursor:
                try:
                    (before,) = decode_cursor(cursor)
                    query = query.where(d.c.sequence < int(before))
                except (ValueError, TypeError) as exc:
                    raise ApiProblem(400, "Bad request", "invalid cursor") from exc
            async with api.runtime.store.sessions() as s:
                rows = [dict(r._mapping) for r in (await s.execute(
                    query.order_by(d.c.sequence.desc()).limit(limit + 1))).all()]
            next_cursor = None
            if len(rows) > limit:
                rows = rows[:limit]
                next_cursor = encode_cursor(rows[-1]["sequence"])
            return {"items": [{
                "delivery_id": r["delivery_id"], "mail_key": r["mail_key"],
                "tenant": r["tenant"], "kind": r["kind"], "to": r["to"],
                "status": r["status"], "requested_at": iso(r["requested_at"]),
                "finished_at": iso(r["finished_at"]), "relay": r["relay"],
                "error": r["error"], "message_id": r["message_id"]} for r in rows],
                "next_cursor": next_cursor}

        @app.get("/api/v1/events")
        async def events(request: Request, since: int = Query(0, ge=0),
                         limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
            who = await api.principal(request)
            items = await api.backlog(who, since, limit)
            return {"items": items,
                    "next_since": items[-1]["sequence"] if items else since}

        @app.get("/api/v1/admin/projection")
        async def projection(request: Request) -> dict[str, Any]:
            await api.admin(request)
            with contextlib.suppress(Exception):
                await api.projector.refresh_stream_last()
            f = store.projection_failures
            async with api.runtime.store.sessions() as s:
                failures = [dict(r._mapping) for r in (await s.execute(
                    select(f).order_by(f.c.sequence.desc()).limit(100))).all()]
            return {**api.projection_state(), "failures": [
                {**x, "failed_at": iso(x["failed_at"])} for x in failures]}

        @app.post("/api/v1/admin/rebuild", status_code=202)
        async def rebuild(request: Request) -> dict[str, Any]:
            await api.admin(request)
            await api.projector.rebuild()
            api.broadcaster.resync_all()
            stream_last = await api.projector.refresh_stream_last()
            return {"rebuilding": True, "stream_last": stream_last}

        @app.websocket("/api/v1/ws")
        async def ws(websocket: WebSocket) -> None:
            await api.websocket(websocket)

        @app.websocket("/ws/emails/{client_id}")
        async def ws_seed(websocket: WebSocket, client_id: str) -> None:
            await api.websocket(websocket)


async def _drain(ws: WebSocket) -> None:
    """Read (and ignore) what the client sends until it goes away."""
    with contextlib.suppress(Exception):
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of sorted ``values``."""
    if not values:
        return None
    rank = max(1, math.ceil(p / 100 * len(values)))
    return round(float(values[rank - 1]), 3)


def _ascii(name: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)


def _keep_attribute(element: str, attribute: str, value: str) -> str | None:
    """Remote images are removed: an image source must be inline (data:) or a part (cid:)."""
    if element == "img" and attribute == "src":
        lowered = value.strip().lower()
        return value if lowered.startswith(("data:image/", "cid:")) else None
    if attribute in ("srcset", "background", "poster"):
        return None
    return value


def sanitized_html(raw: bytes) -> str | None:
    """The mail's HTML body, sanitised with nh3 (scripts, handlers, forms, remote images
    gone); None when it has no HTML part."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    part = message.get_body(preferencelist=("html",))  # type: ignore[attr-defined]
    if part is None:
        return None
    try:
        html = part.get_content()
    except (LookupError, ValueError):
        payload = part.get_payload(decode=True) or b""
        html = payload.decode("utf-8", "replace")
    return nh3.clean(
        html, attribute_filter=_keep_attribute,
        url_schemes={"http", "https", "mailto", "cid", "data"},
        link_rel="noopener noreferrer nofollow",
    )


