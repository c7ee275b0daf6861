"""ai-responder's own tables.

- ``mails``: what mail.received said about every mail (its mailbox and whether that lists
  ``reply``; for those: envelope sender and the raw mail's claim check), and, once
  classified, its thread and text (the thread history of later prompts).
- ``dmarc_failures``: mail whose DMARC check failed (mail.authenticated): never answered.
- ``replies``: one row per mail that asked for a reply (``reply_id``): queued (waiting for the
  backend), pending / held (drafted, waiting for a person), auto (sent without one),
  approved, rejected, skipped. What the draft was built from and how.
- ``audit``: every step of every reply: queued, skipped, drafted, backend failures, the
  decision and who took it, the delivery id.
- ``rate_buckets``: token buckets of the rate limits (per sender, thread, tenant, global).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from postroom_runtime import add_runtime_tables

metadata = MetaData()

mails = Table(
    "mails",
    metadata,
    Column("tenant", String(63), primary_key=True),
    Column("mail_key", String(64), primary_key=True),
    Column("mailbox", String(64), nullable=False),
    Column("message_id", Text, nullable=False),
    Column("envelope_from", Text, nullable=True),
    # the address it was sent to (IMAP: the account's own): the reply's From by default
    Column("recipient", Text, nullable=True),
    Column("reply", Boolean, nullable=False),  # its mailbox lists `reply`
    Column("raw", JSON, nullable=True),  # BlobRef (mail for a `reply` mailbox only)
    Column("thread_id", Text, nullable=True),
    Column("subject", Text, nullable=True),
    Column("body_text", Text, nullable=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Index("ix_mails_tenant_thread", "tenant", "thread_id"),
    Index("ix_mails_received_at", "received_at"),
)

replies = Table(
    "replies",
    metadata,
    Column("reply_id", String(64), primary_key=True),
    Column("tenant", String(63), nullable=False),
    Column("mail_key", String(64), nullable=False),
    Column("mailbox", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", String(32), nullable=True),  # a skip's reason
    Column("detail", Text, nullable=True),
    Column("label", String(16), nullable=True),
    Column("cause_event_id", String(64), nullable=False),  # mail.classified
    Column("trace", JSON, nullable=False),  # the mail's trace context (traceparent)
    Column("thread_id", Text, nullable=True),
    Column("email_id", Text, nullable=True),
    Column("request", JSON, nullable=True),  # what the draft is built from
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("to", JSON, nullable=True),
    Column("from_address", Text, nullable=True),
    Column("subject", Text, nullable=True),
    Column("draft_text", Text, nullable=True),
    Column("body_text", Text, nullable=True),
    Column("body_html", Text, nullable=True),
    Column("language", String(8), nullable=True),
    Column("in_reply_to", Text, nullable=True),
    Column("references", JSON, nullable=True),
    Column("model", String(128), nullable=True),
    Column("backend", String(16), nullable=True),
    Column("prompt_version", String(32), nullable=True),
    Column("sources", JSON, nullable=True),
    Column("held_reasons", JSON, nullable=True),
    Column("prompt_tokens", Integer, nullable=True),
    Column("completion_tokens", Integer, nullable=True),
    Column("latency_ms", Float, nullable=True),
    Column("delivery_id", String(128), nullable=True),
    Column("reviewed_by", String(200), nullable=True),
    Column("queued_at", DateTime(timezone=True), nullable=False),
    Column("drafted_at", DateTime(timezone=True), nullable=True),
    Column("decided_at", DateTime(timezone=True), nullable=True),
    Index("ix_replies_status_next", "status", "next_attempt_at"),
    Index("ix_replies_tenant_queued", "tenant", "queued_at"),
    Index("ix_replies_mail", "tenant", "mail_key"),
)

audit = Table(
    "audit",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("reply_id", String(64), nullable=False, index=True),
    Column("tenant", String(63), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("action", String(32), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("detail", JSON, nullable=False),
)

dmarc_failures = Table(
    "dmarc_failures",
    metadata,
    Column("tenant", String(63), primary_key=True),
    Column("mail_key", String(64), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
)

rate_buckets = Table(
    "rate_buckets",
    metadata,
    Column("scope", String(16), primary_key=True),  # global, tenant, sender, thread
    Column("key", String(255), primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

processed_messages, outbox = add_runtime_tables(metadata)


def utc(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back naive; they were written in UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


async def get_mail(session: AsyncSession, tenant: str, key: str) -> Any:
    return (await session.execute(select(mails).where(
        mails.c.tenant == tenant, mails.c.mail_key == key))).first()


async def dmarc_failed(session: AsyncSession, tenant: str, key: str) -> bool:
    return (await session.execute(select(dmarc_failures.c.at).where(
        dmarc_failures.c.tenant == tenant, dmarc_failures.c.mail_key == key))).first() \
        is not None


async def get_reply(session: AsyncSession, reply_id: str, *, lock: bool = False) -> Any:
    query = select(replies).where(replies.c.reply_id == reply_id)
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).first()


async def update_reply(session: AsyncSession, reply_id: str, **values: Any) -> None:
    await session.execute(update(replies).where(replies.c.reply_id == reply_id).values(**values))


async def record(session: AsyncSession, *, reply_id: str, tenant: str, action: str,
                 actor: str, at: datetime, **detail: Any) -> None:
    await session.execute(insert(audit).values(reply_id=reply_id, tenant=tenant, at=at,
                                               action=action, actor=actor, detail=detail))


async def thread_messages(session: AsyncSession, tenant: str, thread_id: str, *,
                          exclude: str, limit: int) -> list[Any]:
    """Earlier mails of a thread (oldest first) and our replies that were sent."""
    if limit <= 0 or not thread_id:
        return []
    got = (await session.execute(
        select(mails.c.mail_key, mails.c.message_id, mails.c.subject, mails.c.body_text,
               mails.c.received_at)
        .where(mails.c.tenant == tenant, mails.c.thread_id == thread_id,
               mails.c.mail_key != exclude, mails.c.body_text.is_not(None))
        .order_by(mails.c.received_at.desc()).limit(limit))).all()
    sent = (await session.execute(
        select(replies.c.mail_key, replies.c.draft_text, replies.c.subject,
               replies.c.delivery_id, replies.c.decided_at)
        .where(replies.c.tenant == tenant, replies.c.thread_id == thread_id,
               replies.c.delivery_id.is_not(None))
        .order_by(replies.c.decided_at.desc()).limit(limit))).all()
    items = [("customer", r.message_id, r.subject or "", r.body_text or "",
              utc(r.received_at)) for r in got]
    items += [("us", f"<{r.delivery_id}>", r.subject or "", r.draft_text or "",
               utc(r.decided_at)) for r in sent]
    items.sort(key=lambda i: i[4] or datetime.min.replace(tzinfo=UTC))
    return items[-limit:]


async def take_tokens(session: AsyncSession, buckets: list[tuple[str, str, int, int]],
                      now: datetime) -> str | None:
    """Take one token from every bucket (scope, key, per_hour, burst), or from none: the scope
    of the first empty bucket, or None when all were taken."""
    from .handlers import refill

    states: list[tuple[str, str, float, bool]] = []
    for scope, key, per_hour, burst in buckets:
        row = (await session.execute(
            select(rate_buckets).where(rate_buckets.c.scope == scope,
                                       rate_buckets.c.key == key).with_for_update())).first()
        if row is None:
            tokens, exists = float(burst), False
        else:
            elapsed = (now - (utc(row.updated_at) or now)).total_seconds()
            tokens, exists = refill(row.tokens, elapsed, per_hour, burst), True
        if tokens < 1.0:
            return scope
        states.append((scope, key, tokens - 1.0, exists))
    for scope, key, tokens, exists in states:
        if exists:
            await session.execute(update(rate_buckets).where(
                rate_buckets.c.scope == scope, rate_buckets.c.key == key).values(
                tokens=tokens, updated_at=now))
        else:
            await session.execute(insert(rate_buckets).values(
                scope=scope, key=key, tokens=tokens, updated_at=now))
    return None
