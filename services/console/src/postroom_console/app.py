"""console: the read side. Every event of POSTROOM_EVENTS in, a read model in its own store
(rebuildable from the stream), served as a REST API, a WebSocket feed and the dashboard.

Parts: the projector (``projector.py``, an ordered consumer from the stored position), the
live feed (``feed.py``), the API (``api.py``), the API keys (``auth.py``). Label corrections
go out as mail.label_corrected through the runtime's outbox.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import REGISTRY, CollectorRegistry

from postroom_runtime import ServiceRuntime, load_settings

from . import auth, redact, store
from .api import Api
from .config import ConsoleSettings
from .feed import Broadcaster
from .projector import Metrics, Projector

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
STATIC = Path(__file__).parent / "static"
DASHBOARD_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; "
                 "img-src 'self' data:; connect-src 'self'; frame-src 'self'; "
                 "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def add_dashboard(app: FastAPI, static_dir: Path) -> None:
    """``/`` is the dashboard's index.html, ``/static`` its files; both under a strict CSP."""

    @app.middleware("http")
    async def dashboard_headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        response: Response = await call_next(request)
        path = request.url.path
        if path == "/" or path == "/static" or path.startswith("/static/"):
            response.headers["Content-Security-Policy"] = DASHBOARD_CSP
            response.headers["X-Content-Type-Options"] = "nosniff"
            response.headers["Referrer-Policy"] = "no-referrer"
            response.headers["X-Frame-Options"] = "DENY"
        return response

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return FileResponse(static_dir / "index.html", media_type="text/html",
                            headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=static_dir, check_dir=False), name="static")


def build_runtime(
    settings: ConsoleSettings | None = None,
    *,
    registry: CollectorRegistry = REGISTRY,
    configure_logging: bool = True,
) -> ServiceRuntime:
    """The service, ready for ``await runtime.start()`` (or ``postroom_runtime.run``)."""
    settings = settings or load_settings(ConsoleSettings)
    redact.install()  # ?key= / ?ticket= never reach a log line
    runtime = ServiceRuntime(settings, migrations=MIGRATIONS, registry=registry,
                             configure_logging=configure_logging)
    broadcaster = Broadcaster(settings.console_ws_queue)
    projector = Projector(runtime, batch_size=settings.console_batch_size,
                          resubscribe_seconds=settings.console_resubscribe_seconds,
                          metrics=Metrics(registry), on_applied=broadcaster.on_applied,
                          on_reset=broadcaster.resync_all,
                          leader_retry_seconds=settings.console_leader_retry_seconds,
                          follow_poll_seconds=settings.console_follow_poll_seconds)
    runtime.relay_for(store.outbox)  # mail.label_corrected, reply.reviewed, after commit
    api = Api(runtime, projector, broadcaster, ws_backlog=settings.console_ws_backlog,
              mailbox_sync_url=settings.console_mailbox_sync_url,
              mailbox_sync_token=settings.console_mailbox_sync_token,
              mailbox_sync_token_file=settings.console_mailbox_sync_token_file)

    async def ensure_admin_key(_: ServiceRuntime) -> None:
        if settings.console_admin_key:
            async with runtime.store.transaction() as session:
                key_id = await auth.ensure_admin(session, settings.console_admin_key)
            log.info("admin key ensured", extra={"key_id": key_id})

    async def start_projector(_: ServiceRuntime) -> None:
        await projector.start()

    async def stop_projector(_: ServiceRuntime) -> None:
        await projector.stop()

    async def check_projection() -> None:
        if not projector.running:
            raise RuntimeError("projector not running")
        if projector.lag > settings.console_ready_max_lag:
            raise RuntimeError(f"projection {projector.lag} events behind the stream "
                               f"(CONSOLE_READY_MAX_LAG={settings.console_ready_max_lag})")

    runtime.on_start.append(ensure_admin_key)
    runtime.on_start.append(start_projector)
    runtime.on_stop.append(stop_projector)
    runtime.checks["projection"] = check_projection
    runtime.console_api = api  # type: ignore[attr-defined]  # for tests
    runtime.projector = projector  # type: ignore[attr-defined]
    api.add_routes(runtime.http)
    add_dashboard(runtime.http, Path(settings.console_static_dir or STATIC))
    return runtime
