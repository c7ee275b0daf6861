"""Mail authentication after the 250: a consumer of smtp-ingress's own ``mail.received``.

The SMTP reply never waits for DNS: the mail is accepted once stored and published, and this
consumer verifies it afterwards (SPF, DKIM, DMARC, ARC, iprev; ``authentication.py``) from the
raw MIME in the blob store and the SMTP facts in the event, and emits ``mail.authenticated``
through the outbox. Every DNS wait is bounded by ``AUTH_DNS_TIMEOUT_SECONDS`` per check; a
lookup not answered in time is ``temperror`` in the verdict, never a retried or stuck message.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.trace import Status, StatusCode
from sqlalchemy.ext.asyncio import AsyncSession

from postroom_contracts import MailAuthenticated, MailReceived
from postroom_runtime import Outbox, ServiceRuntime

from . import store
from .authentication import Authenticator, SmtpFacts
from .config import IngressSettings
from .dns_lookups import Resolver
from .spec import SERVICE

log = logging.getLogger(__name__)

# The durable JetStream consumer and idempotency scope, declared in spec.py and never renamed
# (a new name starts again from the beginning of the stream): smtp-ingress-mail-authentication
DURABLE = SERVICE.durable_for(MailReceived)


def facts_of(event: MailReceived) -> SmtpFacts:
    smtp = event.smtp
    return SmtpFacts(
        client_ip=smtp.client_ip if smtp is not None else None,
        helo=smtp.helo if smtp is not None else None,
        mail_from=event.envelope_from,
        auth_user=smtp.auth_user if smtp is not None else None,
    )


class MailAuthentication:
    """The consumer handler: fetch, verify, emit."""

    def __init__(self, runtime: ServiceRuntime, settings: IngressSettings) -> None:
        self.runtime = runtime
        self.authenticator = Authenticator(
            Resolver(settings.dns_servers), settings.authserv_id,
            settings.auth_dns_timeout_seconds,
        )
        self.tracer = runtime.tracer_provider.get_tracer("postroom_smtp_ingress")

    async def handle(self, event: MailReceived, session: AsyncSession, outbox: Outbox) -> None:
        if self.runtime.blobs is None:
            raise RuntimeError("blob store not started")
        with self.tracer.start_as_current_span("mail authentication") as span:
            raw = await self.runtime.blobs.get(event.raw)  # missing or corrupt: retried
            verdicts = await self.authenticator.authenticate(raw, facts_of(event))
            attributes: dict[str, Any] = {
                "postroom.mail_key": event.mail_key,
                "auth.dkim": [v.result for v in verdicts.dkim] or ["none"],
                "auth.dmarc": verdicts.dmarc.result,
            }
            if verdicts.spf is not None:
                attributes["auth.spf"] = verdicts.spf.result
            if verdicts.arc is not None:
                attributes["auth.arc"] = verdicts.arc.result
            if verdicts.iprev is not None:
                attributes["auth.iprev"] = verdicts.iprev.result
            span.set_attributes(attributes)
            span.set_status(Status(StatusCode.OK))
        await outbox.emit(MailAuthenticated.caused_by(
            event, message_id=event.message_id, authserv_id=verdicts.authserv_id,
            spf=verdicts.spf, dkim=verdicts.dkim, dmarc=verdicts.dmarc, arc=verdicts.arc,
            iprev=verdicts.iprev, authentication_results=verdicts.authentication_results,
        ))
        log.info("mail authenticated", extra={
            "spf": verdicts.spf.result if verdicts.spf is not None else None,
            "dkim": [v.result for v in verdicts.dkim],
            "dmarc": verdicts.dmarc.result,
            "arc": verdicts.arc.result if verdicts.arc is not None else None,
        })

    async def stop(self, runtime: ServiceRuntime) -> None:
        self.authenticator.close()


def add_mail_authentication(runtime: ServiceRuntime, settings: IngressSettings) -> None:
    """Register the consumer on ``runtime`` (the primary process only)."""
    consumer = MailAuthentication(runtime, settings)
    runtime.consume(MailReceived, consumer.handle, durable=DURABLE,
                    processed=store.processed_messages, outbox=store.outbox)
    runtime.on_stop.append(consumer.stop)
