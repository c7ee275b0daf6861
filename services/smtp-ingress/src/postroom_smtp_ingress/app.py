"""smtp-ingress wiring: the aiosmtpd server(s) on the runtime's event loop, the DATA pipeline,
the tenant registry, metrics and the ``/tenants`` route.

A mail is acknowledged (250) only after its raw MIME is in the blob store, its
``mail.received`` event is acknowledged by JetStream and its dedup row is committed; any
failure before that answers 451 and the sender retries. Retries derive the same event id, so
JetStream (``Nats-Msg-Id``) and the consumers' idempotency tables see one event.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import hmac
import ipaddress
import logging
import os
import time
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, syntax
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import ValidationError

from postroom_contracts import EVENTS_STREAM, MailReceived, SmtpSession, Tenant, mail_key
from postroom_runtime import (
    ConfigError,
    ServiceRuntime,
    TenantRegistry,
    load_seed,
    mail_key_var,
    problem,
    publish_event,
    seed_tenants,
)

from .config import IngressSettings
from .handlers import (
    ACCEPTED,
    ACCEPTED_DUPLICATE,
    BARE_LINE_ENDING,
    RECIPIENT_OK,
    TEMPORARY_FAILURE,
    TLS_REQUIRED,
    TOO_MANY_CONNECTIONS,
    TOO_MANY_RECIPIENTS,
    Recipient,
    build_event,
    client_address,
    group_by_tenant,
    has_bare_line_ending,
    header_section,
    normalise_domain,
    read_headers,
    received_header,
    session_facts,
    smtp_address,
)
from .mail_authentication import add_mail_authentication
from .relay import (
    MAIL_LOOP,
    SEPARATE_TRANSACTION,
    Client,
    Denied,
    decide_recipient,
    fits_transaction,
    is_loop,
)
from .store import ReceivedMail, ReceivedMails
from .workers import (
    MULTIPROC_ENV,
    WorkerFilter,
    WorkerPool,
    signal_ready,
    watch_primary,
    worker_number,
)

log = logging.getLogger("postroom_smtp_ingress")

MIGRATIONS = Path(__file__).parent / "migrations"
IDENT = "Postroom ESMTP"
RESULTS = ("accepted", "duplicate", "rejected", "tempfail", "too_big")


class _DropLoginDataWarning(logging.Filter):
    # aiosmtpd 1.4 logs a deprecation warning on every successful AUTH (Session.login_data)
    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in str(record.msg)


logging.getLogger("mail.log").addFilter(_DropLoginDataWarning())


def route_log(event: MailReceived) -> dict[str, Any]:
    """A route as logged: the decision and how many final recipients, never the addresses."""
    assert event.route is not None
    route = event.route
    return {"mail_key": event.mail_key, "tenant": event.tenant, "kind": route.kind,
            "pbx": route.pbx, "matched_by": route.matched_by, "transcribe": route.transcribe,
            "language": route.language, "forward_mode": route.forward_mode,
            "forward_count": len(route.forward_to)}


class TemporaryFailure(Exception):
    """A dependency is unavailable: answer 451, the sender retries."""


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "postroom_smtp_messages", "Mail transactions by result", ["result"],
            registry=registry,
        )
        # the labelled children, looked up once (labels() validates and locks on every call)
        self.results = {result: self.messages.labels(result) for result in RESULTS}
        self.recipients_rejected = Counter(
            "postroom_smtp_recipients_rejected", "RCPT TO refused, by reply code", ["code"],
            registry=registry,
        )
        self.connections_refused = Counter(
            "postroom_smtp_connections_refused", "Connections refused by the per-IP cap",
            registry=registry,
        )
        self.relay_denied = Counter(
            "postroom_smtp_relay_denied",
            "RCPT refused with 550 5.7.1: not our domain, a user domain from a client that is "
            "not the tenant's PBX, a user domain claimed twice, voicemail not from the PBX",
            ["reason"], registry=registry,
        )
        self.routed = Counter(
            "postroom_smtp_routed",
            "Tenant copies accepted with a route (PBX relay or voicemail address), by kind and "
            "by how the PBX was recognised (network, auth, none)",
            ["kind", "matched_by"], registry=registry,
        )
        self.message_id_reused = Counter(
            "postroom_smtp_message_id_reused",
            "Tenant copies accepted as new mails although the tenant had received their "
            "Message-ID before, with other content",
            registry=registry,
        )
        self.data_seconds = Histogram(
            "postroom_smtp_data_duration_seconds",
            "Time from the end of DATA to the reply (store, publish, commit)",
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.sessions = Gauge(
            "postroom_smtp_sessions_active", "Open SMTP sessions", registry=registry,
            multiprocess_mode="livesum",  # SMTP_WORKERS > 1: the sum over the live processes
        )


class IngressEnvelope(Envelope):
    def __init__(self) -> None:
        super().__init__()
        self.routes: list[Recipient] = []


class IngressSession(Session):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.auth_mechanism: str | None = None  # set by the authenticator on success
        # the facts of the last mail, for the next one of this session (aiosmtpd starts a new
        # session at STARTTLS, so peer and TLS never change within one)
        self.facts: tuple[tuple[Any, ...], SmtpSession] | None = None


class ConnectionLimiter:
    """Open sessions per client address, and the set of live sessions (for shutdown).

    Clients in ``trusted`` networks (``SMTP_TRUSTED_NETWORKS``, as Postfix's $mynetworks)
    are not counted against the per-IP cap.
    """

    def __init__(self, per_ip: int, metrics: Metrics,
                 trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()) -> None:
        self.per_ip = per_ip
        self.metrics = metrics
        self.counts: dict[str, int] = {}
        # live sessions -> the address they count against (None: trusted, not counted)
        self.sessions: dict[IngressSMTP, str | None] = {}
        self._trusted_networks = trusted
        self.is_trusted = lru_cache(maxsize=4096)(self._is_trusted)

    def _is_trusted(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in self._trusted_networks
                   if network.version == address.version)

    def acquire(self, session: IngressSMTP, ip: str) -> bool:
        counted: str | None = None
        if not self.is_trusted(ip):
            count = self.counts.get(ip, 0)
            if count >= self.per_ip:
                self.metrics.connections_refused.inc()
                return False
            self.counts[ip] = count + 1
            counted = ip
        self.sessions[session] = counted
        self.metrics.sessions.inc()
        return True

    def release(self, session: IngressSMTP) -> None:
        if session not in self.sessions:
            return
        ip = self.sessions.pop(session)
        self.metrics.sessions.dec()
        if ip is None:
            return
        count = self.counts.get(ip, 0) - 1
        if count > 0:
            self.counts[ip] = count
        else:
            self.counts.pop(ip, None)


class IngressSMTP(SMTP):
    """aiosmtpd's SMTP protocol plus: a per-IP connection cap (421), ``530 5.7.0`` for MAIL
    before STARTTLS when TLS is required, and knowledge of implicit-TLS listeners."""

    def __init__(
        self,
        handler: IngressHandler,
        *,
        limiter: ConnectionLimiter,
        implicit_tls: bool = False,
        require_tls: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._limiter = limiter
        self._implicit_tls = implicit_tls
        self._require_tls = require_tls
        self._refused = False
        self._metrics = limiter.metrics

    @property
    def is_tls(self) -> bool:
        return self._implicit_tls or self._tls_protocol is not None

    def tls_facts(self) -> tuple[str | None, str | None, int | None] | None:
        """``(version, cipher, bits)`` of the encrypted connection; None for a plain one."""
        if not self.is_tls:
            return None
        ssl_object = self.transport.get_extra_info("ssl_object") if self.transport else None
        if ssl_object is None:
            return "TLS", None, None
        cipher = ssl_object.cipher()
        if not cipher:
            return ssl_object.version(), None, None
        return ssl_object.version(), cipher[0], cipher[2]

    def _create_envelope(self) -> IngressEnvelope:
        return IngressEnvelope()

    def _create_session(self) -> IngressSession:
        return IngressSession(self.loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None and self._original_transport is None:  # not the STARTTLS switch
            ip, _ = client_address(transport.get_extra_info("peername"))
            if not self._limiter.acquire(self, ip):
                self._refused = True
                transport.write(TOO_MANY_CONNECTIONS.encode() + b"\r\n")  # type: ignore[attr-defined]
                transport.close()
                return
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        try:
            super().connection_lost(error)
        finally:
            self._limiter.release(self)

    def eof_received(self) -> bool | None:
        if self._refused:
            return False
        return super().eof_received()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        return smtp_address(arg, self.local_part_limit)

    async def push(self, status: Any) -> None:
        if (status[:3] == "552" or status[:3] == b"552"):
            self._metrics.results["too_big"].inc()
        await super().push(status)

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        if self._require_tls and not self.is_tls:
            await self.push(TLS_REQUIRED)
            return
        await super().smtp_MAIL(arg)


class IngressHandler:
    """aiosmtpd handler: routing at RCPT, the store-publish-commit pipeline at DATA."""

    def __init__(self, ingress: SmtpIngress) -> None:
        self.ingress = ingress
        self.settings = ingress.settings
        self.metrics = ingress.metrics
        self.tracer = ingress.runtime.tracer_provider.get_tracer("postroom_smtp_ingress")
        self.inflight = 0
        self.idle = asyncio.Event()  # set while no transaction is in DATA
        self.idle.set()

    async def handle_EHLO(
        self, server: IngressSMTP, session: Session, envelope: Envelope, hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if not self.settings.auth_users:
            responses = [r for r in responses if not r[4:].startswith("AUTH")]
        return responses

    async def handle_RCPT(
        self, server: IngressSMTP, session: Session, envelope: IngressEnvelope, address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= self.settings.smtp_max_recipients:
            self.metrics.recipients_rejected.labels("452").inc()
            return TOO_MANY_RECIPIENTS
        decision = decide_recipient(
            address,
            self._client(server, session),
            tenant=self.ingress.tenant,
            domains=self.ingress.tenant_domains(),
            shared_domains=self.settings.extra_domains,
            user_domain_owner=self.ingress.user_domain_owner,
        )
        if isinstance(decision, Denied):
            self.metrics.recipients_rejected.labels(decision.reply[:3]).inc()
            if decision.reason is not None:
                self.metrics.relay_denied.labels(decision.reason).inc()
                log.info("recipient refused", extra={"reason": decision.reason})
            return decision.reply
        if not fits_transaction(envelope.routes, decision):
            self.metrics.recipients_rejected.labels(SEPARATE_TRANSACTION[:3]).inc()
            return SEPARATE_TRANSACTION
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        envelope.routes.append(decision)
        return RECIPIENT_OK

    @staticmethod
    def _client(server: IngressSMTP, session: Session) -> Client:
        """The client for the relay decision: an AUTH identity counts only over TLS."""
        ip, _ = client_address(session.peer)
        authenticated = bool(session.authenticated) and server.is_tls
        return Client(ip=ip, auth_user=str(session.auth_data) if authenticated else None)

    async def handle_DATA(
        self, server: IngressSMTP, session: Session, envelope: IngressEnvelope
    ) -> str:
        started = time.perf_counter()
        self.inflight += 1
        self.idle.clear()
        token = mail_key_var.set(None)
        raw: bytes = envelope.original_content or b""
        attributes: dict[str, Any] = {}  # set on the span in one call at the end
        with self.tracer.start_as_current_span(
            "smtp DATA", kind=SpanKind.SERVER, attributes={"smtp.message.size": len(raw)}
        ) as span:
            try:
                result, reply = await self._ingest(server, session, envelope, raw, attributes)
            except Exception as exc:
                result, reply = "tempfail", TEMPORARY_FAILURE
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                if isinstance(exc, TemporaryFailure):
                    log.warning("mail not accepted, sender will retry",
                                extra={"error": str(exc)})
                elif isinstance(exc, ValidationError):
                    # its text would quote the values (addresses, subject): log where, not what
                    log.error("mail not accepted, sender will retry", extra={
                        "error": "ValidationError",
                        "fields": [".".join(map(str, e["loc"])) for e in exc.errors()],
                    })
                else:
                    log.exception("mail not accepted, sender will retry")
            finally:
                self.inflight -= 1
                if not self.inflight:
                    self.idle.set()
                mail_key_var.reset(token)
            attributes["smtp.result"] = result
            span.set_attributes(attributes)
        self.metrics.results[result].inc()
        self.metrics.data_seconds.observe(time.perf_counter() - started)
        return reply

    async def _ingest(
        self, server: IngressSMTP, session: Session, envelope: IngressEnvelope, raw: bytes,
        attributes: dict[str, Any],
    ) -> tuple[str, str]:
        if has_bare_line_ending(raw):
            log.info("mail refused: bare CR or LF in message data")
            return "rejected", BARE_LINE_ENDING
        ingress = self.ingress
        if not ingress.runtime.broker.connection.is_connected:
            raise TemporaryFailure("not connected to NATS")
        # the mail's own content, as the client sent it (our Received header is not part of it):
        # with tenant and Message-ID, what tells a duplicate from another mail
        content = hashlib.sha256(raw).hexdigest()
        headers = read_headers(raw)
        deliveries = group_by_tenant(envelope.routes)
        if any(d.route is not None for d in deliveries) and is_loop(
                header_section(raw), self.settings.smtp_hostname):
            log.warning("mail refused: it passed through this server before (mail loop)")
            return "rejected", MAIL_LOOP
        message_id = headers.message_id
        # one mail key per tenant copy; logs carry the keys, never addresses or subjects
        keys = {d.tenant: mail_key(d.tenant, message_id, content) for d in deliveries}
        mail_key_var.set(",".join(keys.values()))
        attributes["postroom.tenants"] = list(keys)
        attributes["postroom.mail_keys"] = list(keys.values())
        seen = await ingress.mails.seen(message_id)
        new = [d for d in deliveries if not seen.is_duplicate(d.tenant, content)]
        if not new:
            log.info("duplicate mail accepted without a new event")
            return "duplicate", ACCEPTED_DUPLICATE
        facts = self._session_facts(server, session)
        queue_id = os.urandom(6).hex().upper()
        trace = received_header(
            facts, by=self.settings.smtp_hostname, queue_id=queue_id,
            recipients=envelope.rcpt_tos, now=datetime.now(UTC),
            smtputf8=bool(envelope.smtp_utf8),
        )
        assert ingress.runtime.blobs is not None
        # the dedup lookup says the mail is new: skip the blob store's own existence lookup (one
        # NATS round trip per mail); if the bytes are there already they are stored again
        ref = await ingress.runtime.blobs.put(trace + raw, "message/rfc822", check_exists=False)
        events = [
            build_event(
                d, headers, content_sha256=content, envelope_from=envelope.mail_from or "",
                raw=ref, session=facts, message_id_reused=seen.is_reused(d.tenant, content),
            )
            for d in new
        ]
        if len(events) == 1:
            await ingress.publish(events[0])
        else:
            await asyncio.gather(*(ingress.publish(event) for event in events))
        inserted = await ingress.mails.record(
            [
                ReceivedMail(
                    tenant=e.tenant, message_id=e.message_id, mail_key=e.mail_key,
                    event_id=e.event_id, raw_sha256=ref.sha256, size=ref.size,
                    content_sha256=content,
                )
                for e in events
            ]
        )
        if not inserted:
            # the new copies were recorded by a concurrent session between lookup and insert
            log.info("duplicate mail accepted (concurrent delivery)", extra={"queue_id": queue_id})
            return "duplicate", ACCEPTED_DUPLICATE
        reused = [e for e in events if e.message_id_reused and e.mail_key in inserted]
        if reused:
            self.metrics.message_id_reused.inc(len(reused))
            log.info("Message-ID reused with other content: accepted as a new mail", extra={
                "reused_mail_keys": [e.mail_key for e in reused], "queue_id": queue_id})
        routed = [e for e in events if e.route is not None and e.mail_key in inserted]
        for e in routed:
            assert e.route is not None
            self.metrics.routed.labels(e.route.kind, e.route.matched_by or "none").inc()
        log.info("mail accepted", extra={
            "tenants": [e.tenant for e in events], "size": ref.size, "queue_id": queue_id,
            **({"routes": [route_log(e) for e in routed]} if routed else {})})
        return "accepted", ACCEPTED

    @staticmethod
    def _session_facts(server: IngressSMTP, session: Session) -> SmtpSession:
        authenticated = bool(session.authenticated)
        mechanism = getattr(session, "auth_mechanism", None) if authenticated else None
        key = (session.host_name, session.extended_smtp, authenticated, session.auth_data,
               mechanism)
        cached = getattr(session, "facts", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        facts = session_facts(
            peer=session.peer,
            helo=session.host_name,
            esmtp=bool(session.extended_smtp),
            tls=server.tls_facts(),
            auth_user=str(session.auth_data) if authenticated else None,
            auth_mechanism=mechanism,
        )
        if isinstance(session, IngressSession):
            session.facts = (key, facts)
        return facts

    async def handle_exception(self, error: Exception) -> str:
        log.exception("SMTP session error", exc_info=error)
        return TEMPORARY_FAILURE


class SmtpIngress:
    """The SMTP listener(s) of one runtime: started and stopped with it, on its event loop.

    ``worker`` is 0 in the primary (or only) process and 1..N-1 in the workers it starts
    with ``SMTP_WORKERS=N`` (see ``workers.py``); the primary owns the ``pool``.
    """

    def __init__(self, runtime: ServiceRuntime, settings: IngressSettings,
                 worker: int = 0) -> None:
        self.runtime = runtime
        self.settings = settings
        self.worker = worker
        self.pool: WorkerPool | None = None
        if settings.smtp_workers > 1 and worker == 0:
            self.pool = WorkerPool(settings, settings.smtp_workers - 1)
            runtime.checks["workers"] = self.pool.check
        self._watch: asyncio.Task[None] | None = None
        self.metrics = Metrics(runtime.registry)
        self.mails = ReceivedMails(runtime.store)
        self.registry: TenantRegistry | None = None
        self.seed: list[Tenant] = []
        if settings.tenants_seed_file is not None:
            try:
                self.seed = load_seed(settings.tenants_seed_file)
            except ValueError as exc:
                raise ConfigError(f"invalid configuration:\n  TENANTS_SEED_FILE: {exc}") from None
        self.tls_context = settings.tls_context()
        self.limiter = ConnectionLimiter(settings.smtp_max_connections_per_ip, self.metrics,
                                         settings.trusted_networks)
        self.handler = IngressHandler(self)
        self.servers: list[asyncio.Server] = []
        self.port: int | None = None
        self.tls_port: int | None = None

    # --- tenants ---------------------------------------------------------------------------

    def tenant(self, slug: str) -> Tenant | None:
        return self.registry.get(slug) if self.registry is not None else None

    def user_domain_owner(self, domain: str) -> Tenant | None:
        return self.registry.user_domain_owner(domain) if self.registry is not None else None

    def tenant_domains(self) -> frozenset[str]:
        if self.registry is None:
            return frozenset()
        return frozenset(normalise_domain(d) for d in self.registry.domains())

    # --- publishing -------------------------------------------------------------------------

    async def publish(self, event: MailReceived) -> None:
        await publish_event(
            self.runtime.broker, event, stream=EVENTS_STREAM,
            ack_timeout=self.settings.publish_timeout_seconds,
        )

    # --- lifecycle --------------------------------------------------------------------------

    def _authenticator(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = data.login.decode("utf-8", "replace")
        expected = self.settings.auth_users.get(user)
        ok = expected is not None and hmac.compare_digest(expected.encode(), data.password)
        if not ok:
            log.info("SMTP AUTH failed")
        elif isinstance(session, IngressSession):
            session.auth_mechanism = mechanism
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

    def _protocol(self, *, implicit_tls: bool) -> IngressSMTP:
        s = self.settings
        return IngressSMTP(
            self.handler,
            limiter=self.limiter,
            implicit_tls=implicit_tls,
            require_tls=s.smtp_require_tls,
            data_size_limit=s.smtp_max_message_size,
            enable_SMTPUTF8=True,
            hostname=s.smtp_hostname,
            ident=IDENT,
            # the implicit-TLS listener is encrypted from the first byte: no STARTTLS there
            tls_context=None if implicit_tls else self.tls_context,
            timeout=s.smtp_timeout,
            auth_required=s.smtp_auth_required,
            auth_require_tls=not implicit_tls,
            authenticator=self._authenticator,
            auth_exclude_mechanism=None if s.auth_users else ["PLAIN", "LOGIN"],
            loop=asyncio.get_running_loop(),
        )

    async def start(self, runtime: ServiceRuntime) -> None:
        if self.seed and self.worker == 0:
            written = await seed_tenants(runtime.js, self.seed)
            log.info("tenant seed applied", extra={"written": written, "seeded": len(self.seed)})
        self.registry = TenantRegistry(runtime.js)
        await self.registry.start()
        loop = asyncio.get_running_loop()
        s = self.settings
        reuse_port = s.smtp_workers > 1  # the processes share the port(s)
        server = await loop.create_server(
            lambda: self._protocol(implicit_tls=False), s.smtp_host, s.smtp_port,
            reuse_port=reuse_port,
        )
        self.servers.append(server)
        self.port = server.sockets[0].getsockname()[1]
        if s.smtp_tls_port:
            tls_server = await loop.create_server(
                lambda: self._protocol(implicit_tls=True), s.smtp_host, s.smtp_tls_port,
                ssl=self.tls_context, reuse_port=reuse_port,
            )
            self.servers.append(tls_server)
            self.tls_port = tls_server.sockets[0].getsockname()[1]
        log.info("SMTP listening", extra={
            "smtp_port": self.port, "smtp_tls_port": self.tls_port,
            "starttls": self.tls_context is not None,
            "event_loop": type(loop).__module__.split(".")[0],  # uvloop or asyncio
            "gc_threshold": list(gc.get_threshold()),
            "smtp_workers": s.smtp_workers,
        })
        if self.pool is not None:
            assert self.port is not None
            await self.pool.start(self.port, self.tls_port)

    async def started(self, runtime: ServiceRuntime) -> None:
        """In a worker, once everything runs: tell the primary, and stop with it."""
        if self.worker:
            self._watch = asyncio.create_task(watch_primary(runtime.request_stop),
                                              name="watch-primary")
            signal_ready()

    async def stop(self, runtime: ServiceRuntime, grace: float = 10.0) -> None:
        if self.pool is not None:
            self.pool.signal_stop()  # the workers drain in parallel with this process
        if self._watch is not None:
            self._watch.cancel()
        for server in self.servers:
            server.close()
        # let transactions already in DATA finish (their senders would otherwise retry)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.handler.idle.wait(), grace)
        for session in list(self.limiter.sessions):
            if session.transport is not None:
                session.transport.close()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)
        self.servers.clear()
        if self.pool is not None:
            await self.pool.stop(grace=grace + 5)
        await self.mails.close()
        if self.registry is not None:
            await self.registry.stop()


class IngressRuntime(ServiceRuntime):
    """The service runtime with its SMTP side (``.smtp``: ports, store, registry)."""

    smtp: SmtpIngress


def build_runtime(settings: IngressSettings, **runtime_kwargs: Any) -> IngressRuntime:
    """The whole service; ``await runtime.start()`` / ``stop()`` runs it in-process.

    ``runtime_kwargs`` go to :class:`ServiceRuntime` (tests pass a fresh metrics ``registry``
    and a ``span_exporter``). ``SMTP_PORT=0`` binds a free port: see ``runtime.smtp.port``.
    """
    worker = worker_number() if settings.smtp_workers > 1 else 0
    if settings.smtp_workers > 1 and os.environ.get(MULTIPROC_ENV):
        # every process writes its samples to files: /metrics serves their sum
        from prometheus_client import multiprocess

        exposition = CollectorRegistry()
        multiprocess.MultiProcessCollector(exposition)
        runtime_kwargs.setdefault("metrics_registry", exposition)
    elif settings.smtp_workers > 1:
        log.warning("SMTP_WORKERS > 1 without the entry point: /metrics counts this process only")
    runtime = IngressRuntime(
        settings,
        migrations=None if worker else MIGRATIONS,  # the primary migrated before it started us
        serve_http=not worker,
        **runtime_kwargs,
    )
    if settings.smtp_workers > 1 and runtime_kwargs.get("configure_logging", True):
        for handler in logging.getLogger().handlers:
            handler.addFilter(WorkerFilter(worker))
    ingress = SmtpIngress(runtime, settings, worker)
    runtime.smtp = ingress
    runtime.on_start.append(ingress.start)
    runtime.on_started.append(ingress.started)
    runtime.on_stop.append(ingress.stop)
    if settings.auth_verify and not worker:
        # SPF/DKIM/DMARC/ARC after the 250, as a consumer of our own mail.received
        add_mail_authentication(runtime, settings)

    @runtime.http.get("/tenants")
    async def tenants() -> Any:
        if ingress.registry is None:
            return problem(503, "Not ready", "tenant registry not loaded")
        return {
            "tenants": [
                {"slug": t.slug, "domains": t.domains,
                 **({"user_domains": t.user_domains, "pbxs": [p.name for p in t.pbxs]}
                    if t.user_domains or t.pbxs else {})}
                for t in sorted(ingress.registry.all(), key=lambda t: t.slug)
                if t.enabled
            ]
        }

    return runtime
