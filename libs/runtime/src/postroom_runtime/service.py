"""The runtime every service runs in: broker, store, blobs, HTTP, telemetry, lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI
from faststream.middlewares import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.nats.prometheus import NatsPrometheusMiddleware
from nats.js import JetStreamContext, api
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from prometheus_client import REGISTRY, CollectorRegistry
from sqlalchemy import Table

from postroom_contracts import EVENTS_STREAM, Event, subject_filter

from .blobs import BlobStore, FilesystemBlobStore, NatsBlobStore
from .delivery import (
    Consumer,
    DeliveryPolicy,
    Handler,
    OutboxRelay,
    Prepare,
    PreparedHandler,
    prune,
)
from .http import build_http_app
from .jetstream import provision_streams
from .logs import setup_logging
from .settings import RuntimeSettings
from .store import Store
from .telemetry import setup_tracing
from .workers import ProcessPool

log = logging.getLogger(__name__)

Hook = Callable[["ServiceRuntime"], Awaitable[None]]
T = TypeVar("T")
CONNECT_TIMEOUT_SECONDS = 5.0


class ServiceRuntime:
    """Owns the process-wide parts of one service; the service adds subscribers and hooks."""

    def __init__(
        self,
        settings: RuntimeSettings,
        *,
        migrations: Path | None = None,
        registry: CollectorRegistry = REGISTRY,
        span_exporter: SpanExporter | None = None,
        configure_logging: bool = True,
        metrics_registry: CollectorRegistry | None = None,
        serve_http: bool = True,
    ) -> None:
        """``registry`` receives the metrics; ``/metrics`` serves ``metrics_registry`` (default:
        the same; a multi-process service serves the processes' sum there). ``serve_http=False``
        runs no HTTP server (a service's extra worker processes)."""
        self.settings = settings
        self.name = settings.otel_service_name
        self.migrations = migrations
        self.registry = registry
        if configure_logging:
            setup_logging(self.name, settings.log_level)
        self.tracer_provider: TracerProvider = setup_tracing(
            self.name, settings.otel_exporter_otlp_endpoint, span_exporter
        )
        self.broker = NatsBroker(
            settings.nats_url,
            middlewares=[
                NatsTelemetryMiddleware(tracer_provider=self.tracer_provider),
                NatsPrometheusMiddleware(registry=registry, app_name=self.name,
                                         metrics_prefix="postroom"),
            ],
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            allow_reconnect=True,
            logger=logging.getLogger(f"faststream.{self.name}"),
            log_level=logging.DEBUG,
        )
        self.store = Store(settings.database_url)
        self.blobs: BlobStore | None = None
        # readiness checks by name; a service may add its own before start
        self.checks: dict[str, Callable[[], Awaitable[None]]] = {
            "nats": self._check_nats, "store": self.store.ping, "blobs": self._check_blobs,
        }
        # facts shown in /health/ready without deciding readiness (a service may add its own)
        self.details: dict[str, Callable[[], object]] = {}
        self.serve_http = serve_http
        self.http: FastAPI = build_http_app(
            self.name, self.checks, metrics_registry if metrics_registry is not None else registry,
            details=self.details,
        )
        self.policy = DeliveryPolicy(
            max_deliver=settings.consumer_max_deliver,
            backoff_base=settings.consumer_backoff_base_seconds,
            backoff_max=settings.consumer_backoff_max_seconds,
            publish_timeout=settings.publish_timeout_seconds,
            handler_timeout=settings.consumer_handler_timeout_seconds,
            # a third of the ack wait: two heartbeats may be late before JetStream gives up
            heartbeat_interval=settings.consumer_ack_wait_seconds / 3,
        )
        self.relays: dict[str, OutboxRelay] = {}  # one per outbox table
        self.workers: ProcessPool | None = None  # started on first use (run_cpu)
        self.processed_tables: dict[str, Table] = {}
        self._background: list[asyncio.Task[None]] = []
        self._consumers: list[api.ConsumerConfig] = []
        self.on_start: list[Hook] = []
        self.on_started: list[Hook] = []  # after everything (broker, HTTP) started
        self.on_stop: list[Hook] = []
        self._stop = asyncio.Event()
        self._http_server: uvicorn.Server | None = None
        self._http_task: asyncio.Task[None] | None = None
        self.http_port: int | None = None

    async def run_cpu(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in one of ``WORKER_PROCESSES`` worker processes: another core, and a
        call whose awaiting task is cancelled (a consumer's time limit) is stopped by killing
        its worker. ``fn`` must be a module-level function; arguments and result picklable.
        With ``WORKER_PROCESSES=0`` it runs in a thread of this process."""
        if self.settings.worker_processes == 0:
            return await asyncio.to_thread(fn, *args)
        if self.workers is None:
            self.workers = ProcessPool(self.settings.worker_processes)
        return await self.workers.run(fn, *args)

    def relay_for(self, outbox: Table) -> OutboxRelay:
        """The service's background publisher of ``outbox`` (one per table and process)."""
        relay = self.relays.get(outbox.name)
        if relay is None:
            relay = self.relays[outbox.name] = OutboxRelay(
                self.store, outbox, self.broker, self.policy.publish_timeout,
                poll_interval=self.settings.outbox_poll_seconds,
            )
        return relay

    def consume(
        self,
        event_type: type[Event],
        handler: Handler[Any] | PreparedHandler[Any],
        *,
        durable: str,
        processed: Table,
        outbox: Table,
        on_dead_letter: Callable[[Any, str], Awaitable[None]] | None = None,
        batch_size: int | None = None,
        handler_timeout: float | None = None,
        prepare: Prepare[Any] | None = None,
    ) -> Consumer[Any]:
        """Subscribe ``handler`` to every tenant's ``event_type`` with a durable pull consumer.

        ``durable`` is the JetStream consumer and the idempotency scope: written in the
        service's code, never derived from configuration, because a new name starts from the
        beginning of the stream (and reprocesses 14 days of events).

        ``prepare(event)``, when given, runs before the transaction, for up to
        ``CONSUMER_CONCURRENCY`` messages at once on every store: the work that needs no
        transaction and may be done again after a crash (fetching, parsing, storing
        content-addressed blobs). Its result is the handler's fourth argument,
        ``handler(event, session, outbox, prepared)``, and the handler then only writes: the
        write phases of the messages that are ready share a transaction (group commit; one at
        a time on SQLite, ``CONSUMER_CONCURRENCY`` on PostgreSQL)."""
        policy = self.policy
        if handler_timeout is not None:
            policy = DeliveryPolicy(**{**vars(self.policy), "handler_timeout": handler_timeout})
        concurrency = self.settings.consumer_concurrency
        writers = 1 if self.store.is_sqlite else concurrency
        consumer: Consumer[Any] = Consumer(
            name=durable, event_type=event_type, handler=handler, store=self.store,
            processed=processed, outbox=outbox, broker=self.broker, policy=policy,
            relay=self.relay_for(outbox), on_dead_letter=on_dead_letter,
            concurrency=concurrency if prepare is not None else writers,
            prepare=prepare, write_concurrency=writers,
        )
        # Without a prepare step a fetched batch is handled at once and the next fetch waits
        # for all of it. With one, messages flow through a window instead (FastStream's
        # max_workers): a fetch refills it as messages finish, so one slow message does not
        # hold back the batch it came in, and prepare slots stay busy while groups commit.
        window = 4 * concurrency if prepare is not None else 1
        if batch_size is None:
            batch_size = min(window, 64) if prepare is not None else 16
        self.processed_tables[processed.name] = processed
        self._consumers.append(api.ConsumerConfig(
            name=durable, durable_name=durable,
            filter_subject=subject_filter(event_type.event_type),
            ack_policy=api.AckPolicy.EXPLICIT, deliver_policy=api.DeliverPolicy.ALL,
            ack_wait=self.settings.consumer_ack_wait_seconds, max_deliver=-1,
            max_ack_pending=1000,
        ))

        @self.broker.subscriber(
            subject_filter(event_type.event_type),
            stream=JStream(EVENTS_STREAM, declare=False),
            durable=durable,
            pull_sub=PullSub(batch_size=batch_size, timeout=5.0),
            max_workers=window,
            ack_policy=AckPolicy.MANUAL,
            config=ConsumerConfig(
                durable_name=durable,
                ack_wait=self.settings.consumer_ack_wait_seconds,
                max_deliver=-1,  # bounded by Consumer: it dead-letters after max_deliver
                max_ack_pending=1000,
            ),
            title=durable,
        )
        async def _on_message(msg: NatsMessage) -> None:
            await consumer.handle(msg)

        return consumer

    async def _prune_forever(self) -> None:
        outboxes = {name: relay.table for name, relay in self.relays.items()}
        while True:
            try:
                for table in self.processed_tables.values():
                    await self._prune(processed=table)
                for table in outboxes.values():
                    await self._prune(outbox=table)
            except Exception:
                log.exception("pruning failed; will try again")
            await asyncio.sleep(self.settings.prune_interval_seconds)

    async def _prune(self, **tables: Table) -> None:
        removed = await prune(
            self.store, **tables,
            processed_retention=self.settings.processed_retention_seconds,
            outbox_retention=self.settings.outbox_retention_seconds,
        )
        if any(removed.values()):
            log.info("pruned", extra={"removed": removed})

    @property
    def js(self) -> JetStreamContext:
        return self.broker.connection.jetstream()

    async def _check_nats(self) -> None:
        if not self.broker.connection.is_connected:
            raise ConnectionError("not connected to NATS")
        await self.js.account_info()

    async def _check_blobs(self) -> None:
        if self.blobs is None:
            raise RuntimeError("blob store not started")
        await self.blobs.ping()

    async def _connect(self) -> None:
        delay = 0.5
        while True:
            try:
                # bounded: with max_reconnect_attempts=-1 nats-py retries the first connect
                # forever, which would hide this loop's log line and ignore a stop request
                await asyncio.wait_for(self.broker.connect(), CONNECT_TIMEOUT_SECONDS)
                await provision_streams(
                    self.js, self.settings.stream_replicas,
                    self.settings.stream_duplicate_window_seconds,
                )
                return
            except Exception as exc:
                if self._stop.is_set():
                    raise
                log.warning("waiting for NATS", extra={"error": str(exc), "retry_in_s": delay})
                with contextlib.suppress(Exception):
                    await self.broker.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    async def start(self) -> None:
        if self.migrations is not None:
            await self.store.migrate(self.migrations)
        await self._connect()
        if self.settings.blob_backend == "fs":
            self.blobs = FilesystemBlobStore(self.settings.blob_fs_root, self.settings.blob_bucket)
        else:
            self.blobs = NatsBlobStore(self.js, self.settings.blob_bucket,
                                       self.settings.stream_replicas,
                                       small_max_bytes=self.settings.blob_small_max_bytes)
        await self.blobs.ping()
        for hook in self.on_start:
            await hook(self)
        for config in self._consumers:
            # create or update: a consumer made by an older release gets today's ack wait
            await self.js.add_consumer(EVENTS_STREAM, config)
        for relay in self.relays.values():
            relay.start()  # first: events committed before a crash but never published
        if self.relays or self.processed_tables:
            self._background.append(asyncio.create_task(self._prune_forever(), name="prune"))
        await self.broker.start()
        if self.serve_http:
            await self._start_http()
        log.info("service started", extra={"http_port": self.http_port})
        for hook in self.on_started:
            await hook(self)

    async def _start_http(self) -> None:
        config = uvicorn.Config(self.http, host=self.settings.http_host,
                                port=self.settings.http_port, log_config=None,
                                access_log=False, lifespan="off")
        self._http_server = uvicorn.Server(config)
        self._http_server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._http_task = asyncio.create_task(self._http_server.serve())
        while not self._http_server.started:
            if self._http_task.done():
                self._http_task.result()
                raise RuntimeError("HTTP server stopped during start-up")
            await asyncio.sleep(0.02)
        sockets = [s for srv in self._http_server.servers for s in srv.sockets]
        self.http_port = sockets[0].getsockname()[1] if sockets else self.settings.http_port

    async def stop(self) -> None:
        for hook in reversed(self.on_stop):
            try:
                await hook(self)
            except Exception:
                log.exception("stop hook failed")
        with contextlib.suppress(Exception):
            await self.broker.stop()  # subscribers first: nothing new is committed
        for relay in self.relays.values():
            with contextlib.suppress(Exception):  # best effort: the next start publishes it
                await asyncio.wait_for(relay.flush(), self.policy.publish_timeout)
            await relay.stop()
        for task in self._background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._http_server is not None:
            self._http_server.should_exit = True
            if self._http_task is not None:
                with contextlib.suppress(Exception):
                    await self._http_task
        if self.workers is not None:
            await self.workers.aclose()
        await self.store.close()
        self.tracer_provider.shutdown()
        log.info("service stopped")

    def request_stop(self) -> None:
        self._stop.set()

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        starting = asyncio.create_task(self.start(), name="start-up")
        stopping = asyncio.create_task(self._stop.wait(), name="stop-request")
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            # stopped while still starting (e.g. waiting for NATS): stop at once, cleanly
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            log.info("stopped before start-up finished")
            await self.stop()
            return
        stopping.cancel()
        try:
            starting.result()
            await self._stop.wait()
        finally:
            await self.stop()


def run(build: Callable[[], Awaitable[ServiceRuntime]] | Callable[[], ServiceRuntime]) -> int:
    """Entry point helper for a service's ``__main__``: exits 2 on bad configuration."""
    from .settings import ConfigError

    async def main() -> None:
        runtime = build()
        if asyncio.iscoroutine(runtime):
            runtime = await runtime
        await runtime.run_forever()  # type: ignore[union-attr]

    try:
        asyncio.run(main())
    except ConfigError as exc:
        import sys

        print(f"postroom: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


__all__ = ["Any", "ServiceRuntime", "run"]
