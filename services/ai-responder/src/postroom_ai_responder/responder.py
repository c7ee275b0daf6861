"""The reply pipeline: which mail gets a reply (consumers), the drafting (a background task
that takes queued replies one at a time to the backend) and the decisions (reply.reviewed).

1. mail.received: every mail's mailbox, and for a ``reply`` mailbox its envelope sender and
   raw mail (claim check). mail.authenticated: DMARC failures.
2. mail.classified: the tenant's reply policy for the mailbox and the label, then, before any
   model call, the loop guard (RFC 3834), ALLOWED_SENDERS / BLOCKED_SENDERS, forbidden topics
   and the rate limits (token buckets in the store). A mail that passes is queued (a
   ``replies`` row, status ``queued``); one that does not gets reply.skipped.
3. The drafter takes queued replies, oldest first: prompt (knowledge passages, the thread,
   the mail quoted as data), backend (behind its breaker), guardrails, template. Then in one
   transaction: the row, the audit entry, reply.drafted (in the mail's trace) and, when the
   tenant auto-sends and no guardrail held it, delivery.requested. A backend that fails
   leaves the row queued: it is tried again every REPLY_RETRY_SECONDS, never lost.
4. reply.reviewed: the first decision on a drafted reply is final. An approval publishes
   delivery.requested (``reply-<reply_id>``, once) for the mailer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from opentelemetry import context as otel_context
from opentelemetry import propagate
from sqlalchemy import event as sa_event
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from postroom_contracts import (
    BlobRef,
    DeliveryRequested,
    KnowledgePassage,
    MailAuthenticated,
    MailClassified,
    MailReceived,
    ReplyDrafted,
    ReplyPolicy,
    ReplyReviewed,
    ReplySkipped,
    Tenant,
    derive_event_id,
    reply_id_for,
)
from postroom_runtime import Outbox, ServiceRuntime, TenantRegistry
from postroom_runtime.store import utcnow

from . import guardrails, store
from .backends import BackendUnavailable, GuardedBackend, Request
from .config import AiResponderSettings
from .handlers import Skip, loop_guard, sender_policy
from .mail import LANGUAGES, MailFacts, parse_mail
from .metrics import Metrics
from .prompt import PROMPT_VERSION, Previous, build, clean_output
from .templates import Templates

log = logging.getLogger(__name__)
ACTOR = "ai-responder"
MAIL_RETENTION_DAYS = 15  # past the events stream's 14 days
PRUNE_SECONDS = 3600.0
RECEIVED_WAIT_SECONDS = 20.0


@dataclass
class Prepared:
    """mail.classified before its transaction: nothing to do (None), a skip, or a reply."""

    mailbox: str
    skip: Skip | None = None
    facts: MailFacts | None = None
    policy: ReplyPolicy | None = None
    language: str = "en"
    sender_key: str = ""
    reply_from: str = ""


def _json_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Responder:
    def __init__(self, runtime: ServiceRuntime, settings: AiResponderSettings,
                 backend: GuardedBackend, metrics: Metrics) -> None:
        self.runtime = runtime
        self.settings = settings
        self.backend = backend
        self.metrics = metrics
        self.templates = Templates(settings.reply_template_dir)
        self.tenants: TenantRegistry | None = None
        self.wake = asyncio.Event()
        self.tracer = runtime.tracer_provider.get_tracer("postroom_ai_responder")
        self._knowledge_files: dict[str, tuple[float, list[KnowledgePassage]]] = {}

    # --- helpers -----------------------------------------------------------------------

    def tenant(self, slug: str) -> Tenant | None:
        return self.tenants.get(slug) if self.tenants is not None else None

    def own_addresses(self, tenant: Tenant, mailbox: str, policy: ReplyPolicy,
                      reply_from: str) -> list[str]:
        return [*self.settings.own, *tenant.domains,
                tenant.reply_from_address(mailbox, policy).lower(), reply_from.lower()]

    @staticmethod
    def reply_from(tenant: Tenant, mailbox: str, policy: ReplyPolicy,
                   recipient: str | None) -> str:
        """The reply's From: the policy's ``from_address``; else the address the mail was
        sent to (a customer who wrote to ai@company.example hears back from it, whichever
        way the mail came in); else the tenant's mailbox address."""
        return (policy.from_address or recipient
                or tenant.reply_from_address(mailbox, policy))

    def knowledge(self, policy: ReplyPolicy) -> list[KnowledgePassage]:
        passages = list(policy.knowledge)
        if policy.knowledge_file:
            path = Path(policy.knowledge_file)
            try:
                mtime = path.stat().st_mtime
                cached = self._knowledge_files.get(str(path))
                if cached is None or cached[0] != mtime:
                    data = yaml.safe_load(path.read_text()) or []
                    if isinstance(data, dict):
                        data = data.get("passages", [])
                    cached = (mtime, [KnowledgePassage.model_validate(p) for p in data])
                    self._knowledge_files[str(path)] = cached
                passages += cached[1]
            except (OSError, ValueError, yaml.YAMLError) as exc:
                log.warning("knowledge file unreadable; using the inline passages", extra={
                    "path": str(path), "error": str(exc)[:200]})
        return passages

    # --- mail.received, mail.authenticated --------------------------------------------

    async def nothing_to_prepare(self, event: Any) -> None:
        return None

    async def on_received(self, event: MailReceived, session: AsyncSession,
                          outbox: Outbox, _: None = None) -> None:
        if await store.get_mail(session, event.tenant, event.mail_key) is not None:
            return
        wants = "reply" in event.actions
        await session.execute(insert(store.mails).values(
            tenant=event.tenant, mail_key=event.mail_key, mailbox=event.mailbox.lower()[:64],
            message_id=event.message_id, reply=wants,
            envelope_from=event.envelope_from if wants else None,
            recipient=event.recipients[0].lower() if wants and event.recipients else None,
            raw=event.raw.model_dump(mode="json") if wants else None,
            received_at=event.occurred_at))

    async def on_authenticated(self, event: MailAuthenticated, session: AsyncSession,
                               outbox: Outbox, _: None = None) -> None:
        if event.dmarc.result != "fail":
            return
        if not await store.dmarc_failed(session, event.tenant, event.mail_key):
            await session.execute(insert(store.dmarc_failures).values(
                tenant=event.tenant, mail_key=event.mail_key, at=utcnow()))

    # --- mail.classified ---------------------------------------------------------------

    async def prepare_classified(self, event: MailClassified) -> Prepared | None:
        # mail.received is published long before, but read by another consumer that may lag
        # behind under a burst: wait for it a while, then fail (retried with backoff)
        deadline = time.monotonic() + RECEIVED_WAIT_SECONDS
        while True:
            async with self.runtime.store.sessions() as session:
                mail = await store.get_mail(session, event.tenant, event.mail_key)
                dmarc_failed = await store.dmarc_failed(session, event.tenant, event.mail_key)
                done = await store.get_reply(session,
                                             reply_id_for(event.tenant, event.mail_key))
            if mail is not None or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        if mail is None:
            raise LookupError("mail.received of this mail not seen yet")
        if not mail.reply or done is not None:
            return None
        mailbox = mail.mailbox
        tenant = self.tenant(event.tenant)
        if tenant is None:
            return Prepared(mailbox, Skip("policy", "unknown or disabled tenant"))
        policy = tenant.reply_policy(mailbox)
        if policy is None:
            return Prepared(mailbox, Skip("policy", f"no reply policy for mailbox {mailbox}"))
        blobs = self.runtime.blobs
        assert blobs is not None
        raw = await blobs.get(BlobRef.model_validate(mail.raw))
        facts = await asyncio.to_thread(parse_mail, raw)
        reply_from = self.reply_from(tenant, mailbox, policy, mail.recipient)
        # automated mail first, whatever its label (the reason a person looking sees)
        skip = loop_guard(facts, envelope_from=mail.envelope_from,
                          own=self.own_addresses(tenant, mailbox, policy, reply_from),
                          dmarc="fail" if dmarc_failed else None)
        if skip is None and event.classification not in policy.labels:
            skip = Skip("policy",
                        f"label {event.classification} gets no reply in mailbox {mailbox}")
        skip = skip or sender_policy(facts.sender, allowed=self.settings.allowed,
                                     blocked=self.settings.blocked)
        if skip is None:
            topics = guardrails.topics_in(f"{facts.subject}\n{facts.body_text}",
                                          policy.forbidden_topics)
            if topics:
                skip = Skip("guardrail", f"forbidden topic: {topics[0]}")
        language = facts.language if policy.language == "auto" else policy.language
        if language not in LANGUAGES:
            language = "en"
        return Prepared(mailbox, skip, facts, policy, language, facts.sender, reply_from)

    async def skip(self, event: MailClassified, session: AsyncSession, outbox: Outbox,
                   prepared: Prepared, skip: Skip) -> None:
        reply_id = reply_id_for(event.tenant, event.mail_key)
        now = utcnow()
        await session.execute(insert(store.replies).values(
            reply_id=reply_id, tenant=event.tenant, mail_key=event.mail_key,
            mailbox=prepared.mailbox, status="skipped", reason=skip.reason,
            detail=skip.detail, label=event.classification, cause_event_id=event.event_id,
            trace={}, email_id=event.email_id, attempts=0, queued_at=now))
        await store.record(session, reply_id=reply_id, tenant=event.tenant, action="skipped",
                           actor=ACTOR, at=now, reason=skip.reason, detail=skip.detail)
        await outbox.emit(ReplySkipped.caused_by(event, reason=skip.reason,
                                                 detail=skip.detail, reply_id=reply_id))
        self.metrics.skipped.labels(skip.reason).inc()
        log.info("no reply", extra={"mail_key": event.mail_key, "reason": skip.reason,
                                    "detail": skip.detail})

    async def on_classified(self, event: MailClassified, session: AsyncSession, outbox: Outbox,
                            prepared: Prepared | None) -> None:
        if prepared is None:
            return
        reply_id = reply_id_for(event.tenant, event.mail_key)
        if await store.get_reply(session, reply_id) is not None:
            return
        if prepared.skip is not None or prepared.facts is None or prepared.policy is None:
            await self.skip(event, session, outbox, prepared,
                            prepared.skip or Skip("policy", "no policy"))
            return
        facts, policy = prepared.facts, prepared.policy
        now = utcnow()
        limits = policy.limits
        empty = await store.take_tokens(session, [
            ("global", "*", self.settings.max_emails_per_hour, self.settings.max_emails_burst),
            ("tenant", event.tenant, limits.tenant.per_hour, limits.tenant.burst),
            ("sender", f"{event.tenant}:{facts.sender}"[:255], limits.sender.per_hour,
             limits.sender.burst),
            ("thread", f"{event.tenant}:{facts.thread_id}"[:255], limits.thread.per_hour,
             limits.thread.burst),
        ], now)
        if empty is not None:
            await self.skip(event, session, outbox, prepared, Skip(
                "rate-limit", f"the {empty} limit is reached"
                + (" (MAX_EMAILS_PER_HOUR)" if empty == "global" else "")))
            return
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        request = {
            "subject": facts.subject, "body": facts.body_text, "quoted": facts.quoted_text,
            "sender": facts.sender, "sender_name": facts.sender_name,
            "language": prepared.language, "message_id": facts.message_id,
            "references": facts.thread, "in_reply_to": facts.message_id,
            "thread_id": facts.thread_id, "reply_from": prepared.reply_from,
        }
        await session.execute(insert(store.replies).values(
            reply_id=reply_id, tenant=event.tenant, mail_key=event.mail_key,
            mailbox=prepared.mailbox, status="queued", label=event.classification,
            cause_event_id=event.event_id, trace=carrier, thread_id=facts.thread_id,
            email_id=event.email_id, request=request, attempts=0, next_attempt_at=now,
            queued_at=now))
        await session.execute(store.mails.update().where(
            store.mails.c.tenant == event.tenant, store.mails.c.mail_key == event.mail_key
        ).values(thread_id=facts.thread_id, subject=facts.subject[:998],
                 body_text=facts.body_text[:8000]))
        await store.record(session, reply_id=reply_id, tenant=event.tenant, action="queued",
                           actor=ACTOR, at=now, label=event.classification,
                           language=prepared.language)
        self.metrics.queued.inc()
        self.wake_after_commit(session)

    # --- drafting ----------------------------------------------------------------------

    def wake_after_commit(self, session: AsyncSession) -> None:
        """Start the drafter once the queued row is committed (woken earlier, it would find
        nothing and wait for its next look)."""
        loop = asyncio.get_running_loop()

        def committed(_: Any) -> None:
            loop.call_soon_threadsafe(self.wake.set)

        sa_event.listen(session.sync_session, "after_commit", committed, once=True)

    async def due(self, limit: int = 20) -> list[Any]:
        r = store.replies
        now = utcnow()
        async with self.runtime.store.sessions() as session:
            return list((await session.execute(
                select(r.c.reply_id).where(r.c.status == "queued", r.c.next_attempt_at <= now)
                .order_by(r.c.queued_at).limit(limit))).scalars())

    async def prune(self) -> int:
        """Forget mail that never asked for a reply once no stream can deliver its
        classification any more (the events stream keeps 14 days)."""
        m = store.mails
        cutoff = utcnow() - timedelta(days=MAIL_RETENTION_DAYS)
        async with self.runtime.store.transaction() as session:
            result = await session.execute(m.delete().where(
                m.c.reply.is_(False), m.c.received_at < cutoff))
        return int(result.rowcount or 0)

    async def run_drafter(self) -> None:
        """Draft queued replies one at a time until stopped; after a backend failure wait
        REPLY_RETRY_SECONDS (the others would fail the same way)."""
        pruned_at = 0.0
        while True:
            try:
                if time.monotonic() - pruned_at > PRUNE_SECONDS:
                    pruned_at = time.monotonic()
                    await self.prune()
                ids = await self.due()
                for reply_id in ids:
                    if not await self.draft(reply_id):
                        break
                await self.update_queue_gauge()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("drafting failed; will try again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=min(
                    1.0, self.settings.reply_retry_seconds))
            self.wake.clear()

    async def update_queue_gauge(self) -> None:
        r = store.replies
        async with self.runtime.store.sessions() as session:
            count = (await session.execute(select(r.c.reply_id).where(
                r.c.status == "queued"))).all()
        self.metrics.queue.set(len(count))
        self.metrics.breaker.set({"closed": 0, "half-opened": 1, "opened": 2}.get(
            await self.backend.breaker_state(), 0))

    async def claim(self, reply_id: str) -> Any:
        """Take a queued reply for drafting: its ``next_attempt_at`` moves past the time a
        draft may take (a lease: another replica leaves it alone, and takes it over if this
        process dies). None when it is not due or someone else has it."""
        r = store.replies
        now = utcnow()
        lease = now + timedelta(seconds=self.settings.processing_timeout + 30)
        async with self.runtime.store.transaction() as session:
            result = await session.execute(
                r.update().where(r.c.reply_id == reply_id, r.c.status == "queued",
                                 r.c.next_attempt_at <= now).values(next_attempt_at=lease))
            if result.rowcount != 1:
                return None
            return await store.get_reply(session, reply_id)

    async def draft(self, reply_id: str) -> bool:
        """Draft one queued reply; False when the backend failed (the row stays queued)."""
        row = await self.claim(reply_id)
        if row is None:
            return True
        token = otel_context.attach(propagate.extract(row.trace or {}))
        try:
            with self.tracer.start_as_current_span("ai-responder draft"):
                return await self._draft(row)
        except Exception as exc:  # a bug or a bad template: this reply waits, others go on
            log.exception("drafting a reply failed; it waits", extra={
                "reply_id": reply_id, "mail_key": row.mail_key})
            await self._wait(row, f"{type(exc).__name__}: {exc}", backoff=True)
            return True
        finally:
            otel_context.detach(token)

    async def _draft(self, row: Any) -> bool:
        req = row.request
        tenant = self.tenant(row.tenant)
        policy = tenant.reply_policy(row.mailbox) if tenant is not None else None
        if tenant is None or policy is None:
            await self._close_unanswerable(row, "the tenant's reply policy is gone")
            return True
        async with self.runtime.store.sessions() as session:
            earlier = await store.thread_messages(
                session, row.tenant, row.thread_id or "", exclude=row.mail_key,
                limit=self.settings.reply_thread_messages)
        previous = [Previous(message_id=m[1], author=m[0], subject=m[2], text=m[3])
                    for m in earlier]
        prompt = build(subject=req["subject"], body=req["body"], quoted=req["quoted"],
                       sender_name=req["sender_name"], language=req["language"],
                       knowledge=self.knowledge(policy), previous=previous,
                       organisation=policy.organisation or tenant.name,
                       redact_pii=policy.redact_pii)
        request = Request(prompt=prompt, subject=req["subject"], thread_id=req["thread_id"],
                          sender=guardrails.redact(req["sender"]) if policy.redact_pii
                          else req["sender"], max_tokens=self.settings.ai_max_tokens,
                          temperature=self.settings.ai_temperature)
        try:
            draft = await self.backend.generate(request)
        except BackendUnavailable as exc:
            await self._backend_failed(row, str(exc))
            return False
        self.metrics.backend_calls.labels(self.backend.name, "ok").inc()
        self.metrics.latency.labels(self.backend.name).observe(draft.latency_ms / 1000)
        if draft.prompt_tokens:
            self.metrics.tokens.labels(self.backend.name, "prompt").inc(draft.prompt_tokens)
        if draft.completion_tokens:
            self.metrics.tokens.labels(self.backend.name, "completion").inc(
                draft.completion_tokens)
        text = clean_output(draft.text)
        reasons = guardrails.review(
            text, sources=prompt.grounding, link_sources=[*prompt.trusted, req["sender"]],
            forbidden=policy.forbidden_topics,
            injection=guardrails.injection_in(f"{req['subject']}\n{req['body']}"),
            language=req["language"],
            cut_off=(draft.completion_tokens or 0) >= self.settings.ai_max_tokens)
        now = utcnow()
        # a row queued before "reply_from" was kept: the policy's or the mailbox's address
        from_address = req.get("reply_from") or tenant.reply_from_address(row.mailbox, policy)
        template = policy.template
        if template not in self.templates.names():
            reasons.append(f"the tenant's template '{template}' does not exist; drafted with "
                           "'standard'")
            template = "standard"
        rendered = self.templates.render(
            template, draft=text, language=req["language"],
            sender_name=req["sender_name"], original_subject=req["subject"],
            thread_id=req["thread_id"], assistant_name=policy.assistant_name,
            organisation=policy.organisation or tenant.name, disclaimer=policy.disclaimer,
            now=now)
        status = "held" if reasons else ("auto" if policy.mode == "auto" else "pending")
        to = [req["sender"]]
        references = list(req["references"])
        drafted = ReplyDrafted(
            event_id=derive_event_id(row.cause_event_id, ReplyDrafted.event_type),
            causation_id=row.cause_event_id, tenant=row.tenant, mail_key=row.mail_key,
            reply_id=row.reply_id, mailbox=row.mailbox, to=to, from_address=from_address,
            subject=rendered.subject, body_text=rendered.text, body_html=rendered.html,
            draft_text=text, in_reply_to=req["in_reply_to"], references=references,
            language=req["language"], model=draft.model,
            backend=draft.backend,  # type: ignore[arg-type]
            prompt_version=PROMPT_VERSION, sources=prompt.sources,  # type: ignore[arg-type]
            status=status, held_reasons=reasons, prompt_tokens=draft.prompt_tokens,
            completion_tokens=draft.completion_tokens, latency_ms=round(draft.latency_ms, 1),
            email_id=row.email_id)
        async with self.runtime.store.transaction() as session:
            current = await store.get_reply(session, row.reply_id, lock=True)
            if current is None or current.status != "queued":
                return True
            outbox = Outbox(session, store.outbox)
            values: dict[str, Any] = dict(
                status=status, to=to, from_address=from_address, subject=rendered.subject,
                draft_text=text, body_text=rendered.text, body_html=rendered.html,
                language=req["language"], in_reply_to=req["in_reply_to"],
                references=references, model=draft.model, backend=draft.backend,
                prompt_version=PROMPT_VERSION, sources=prompt.sources, held_reasons=reasons,
                prompt_tokens=draft.prompt_tokens, completion_tokens=draft.completion_tokens,
                latency_ms=draft.latency_ms, drafted_at=now, last_error=None,
                next_attempt_at=None)
            await store.record(session, reply_id=row.reply_id, tenant=row.tenant,
                               action=status if status == "held" else "drafted", actor=ACTOR,
                               at=now, model=draft.model, backend=draft.backend,
                               prompt_version=PROMPT_VERSION, sources=prompt.sources,
                               held_reasons=reasons, status=status)
            await outbox.emit(drafted)
            if status == "auto":
                delivery = self.delivery(drafted, cause=drafted, body_text=rendered.text,
                                         body_html=rendered.html)
                await outbox.emit(delivery)
                values.update(delivery_id=delivery.delivery_id, decided_at=now,
                              reviewed_by="policy:auto")
                await store.record(session, reply_id=row.reply_id, tenant=row.tenant,
                                   action="sent", actor="policy:auto", at=now,
                                   delivery_id=delivery.delivery_id)
            await store.update_reply(session, row.reply_id, **values)
        self.runtime.relay_for(store.outbox).kick()
        self.metrics.drafts.labels(draft.backend, status).inc()
        log.info("reply drafted", extra={
            "mail_key": row.mail_key, "reply_id": row.reply_id, "status": status,
            "backend": draft.backend, "latency_ms": round(draft.latency_ms),
            "held_reasons": len(reasons)})
        return True

    async def _backend_failed(self, row: Any, error: str) -> None:
        outcome = "breaker_open" if "breaker open" in error else "error"
        self.metrics.backend_calls.labels(self.backend.name, outcome).inc()
        await self._wait(row, error)
        log.warning("AI backend unavailable; the mail waits", extra={
            "mail_key": row.mail_key, "reply_id": row.reply_id, "error": error[:300],
            "attempt": row.attempts + 1})

    async def _wait(self, row: Any, error: str, *, backoff: bool = False) -> None:
        """The reply stays queued: tried again after REPLY_RETRY_SECONDS (an outage: the
        breaker decides how often the backend is really called), or, for a failure of its
        own (``backoff``), after a delay doubling up to an hour."""
        now = utcnow()
        delay = self.settings.reply_retry_seconds
        if backoff:
            delay = min(3600.0, delay * 2 ** min(row.attempts, 12))
        async with self.runtime.store.transaction() as session:
            await store.update_reply(
                session, row.reply_id, attempts=row.attempts + 1, last_error=error[:500],
                next_attempt_at=now + timedelta(seconds=delay))
            if row.attempts == 0:  # the first failure; later ones only count
                await store.record(session, reply_id=row.reply_id, tenant=row.tenant,
                                   action="waiting", actor=ACTOR, at=now,
                                   error=error[:300], backend=self.backend.name)

    async def _close_unanswerable(self, row: Any, detail: str) -> None:
        now = utcnow()
        skipped = ReplySkipped(
            event_id=derive_event_id(row.cause_event_id, ReplySkipped.event_type),
            causation_id=row.cause_event_id, tenant=row.tenant, mail_key=row.mail_key,
            reason="policy", detail=detail, reply_id=row.reply_id)
        async with self.runtime.store.transaction() as session:
            await store.update_reply(session, row.reply_id, status="skipped", reason="policy",
                                     detail=detail, next_attempt_at=None)
            await store.record(session, reply_id=row.reply_id, tenant=row.tenant,
                               action="skipped", actor=ACTOR, at=now, reason="policy",
                               detail=detail)
            await Outbox(session, store.outbox).emit(skipped)
        self.runtime.relay_for(store.outbox).kick()
        self.metrics.skipped.labels("policy").inc()

    # --- decisions ---------------------------------------------------------------------

    def delivery(self, reply: Any, *, cause: Any, body_text: str,
                 body_html: str | None) -> DeliveryRequested:
        """The mailer's request for a reply: recipients, From and threading from the draft
        (the mail's headers and the policy), never from a model."""
        return DeliveryRequested.caused_by(
            cause, delivery_id=f"reply-{reply.reply_id}", kind="reply", to=list(reply.to),
            from_address=reply.from_address, subject=reply.subject, body_text=body_text,
            body_html=body_html, in_reply_to=reply.in_reply_to,
            references=list(reply.references or []),
            headers={"Auto-Submitted": "auto-replied",
                     "X-Loop": reply.from_address or "postroom-ai-responder"})

    async def on_reviewed(self, event: ReplyReviewed, session: AsyncSession,
                          outbox: Outbox) -> None:
        row = await store.get_reply(session, event.reply_id, lock=True)
        if row is None:
            raise LookupError(f"unknown reply {event.reply_id}")
        now = utcnow()
        if row.status not in ("pending", "held"):
            await store.record(session, reply_id=row.reply_id, tenant=row.tenant,
                               action="ignored", actor=event.reviewed_by[:200], at=now,
                               decision=event.decision, status=row.status)
            log.info("decision ignored: the reply is already decided or not drafted", extra={
                "reply_id": row.reply_id, "status": row.status, "decision": event.decision})
            return
        self.metrics.decisions.labels(event.decision).inc()
        if event.decision == "rejected":
            await store.update_reply(session, row.reply_id, status="rejected",
                                     reviewed_by=event.reviewed_by[:200], decided_at=now)
            await store.record(session, reply_id=row.reply_id, tenant=row.tenant,
                               action="rejected", actor=event.reviewed_by[:200], at=now,
                               reason=event.reason, event_id=event.event_id)
            return
        body_text, body_html, draft_text = row.body_text, row.body_html, row.draft_text
        edited = event.body_text is not None and event.body_text.strip() != \
            (row.draft_text or "").strip()
        if edited:
            assert event.body_text is not None
            tenant = self.tenant(row.tenant)
            policy = tenant.reply_policy(row.mailbox) if tenant is not None else None
            req = row.request
            draft_text = event.body_text.strip()
            rendered = self.templates.render(
                policy.template if policy and policy.template in self.templates.names()
                else "standard", draft=draft_text,
                language=row.language or "en", sender_name=req["sender_name"],
                original_subject=req["subject"], thread_id=req["thread_id"],
                assistant_name=policy.assistant_name if policy else "Support",
                organisation=(policy.organisation if policy else "") or
                (tenant.name if tenant else ""),
                disclaimer=policy.disclaimer if policy else {}, now=now)
            body_text, body_html = rendered.text, rendered.html
        delivery = self.delivery(row, cause=event, body_text=body_text, body_html=body_html)
        await outbox.emit(delivery)
        await store.update_reply(session, row.reply_id, status="approved",
                                 reviewed_by=event.reviewed_by[:200], decided_at=now,
                                 delivery_id=delivery.delivery_id, draft_text=draft_text,
                                 body_text=body_text, body_html=body_html)
        await store.record(session, reply_id=row.reply_id, tenant=row.tenant,
                           action="approved", actor=event.reviewed_by[:200], at=now,
                           delivery_id=delivery.delivery_id, edited=edited,
                           event_id=event.event_id, model=row.model,
                           prompt_version=row.prompt_version, sources=row.sources)
        log.info("reply approved", extra={"reply_id": row.reply_id, "edited": edited,
                                          "delivery_id": delivery.delivery_id})
