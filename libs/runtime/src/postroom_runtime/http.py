"""Per-service HTTP: liveness, readiness (NATS + store + blobs), Prometheus metrics, and the
OpenAPI docs served by the service itself."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

Check = Callable[[], Awaitable[None]]
Detail = Callable[[], object]  # a value, or an awaitable of one (bounded as a check is)


def problem(status: int, title: str, detail: str, **extra: object) -> JSONResponse:
    """An RFC 9457 problem response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def build_http_app(
    service: str,
    checks: dict[str, Check],
    registry: CollectorRegistry = REGISTRY,
    check_timeout: float = 3.0,
    details: dict[str, Detail] | None = None,
) -> FastAPI:
    """``details``: extra facts for ``/health/ready`` by name (e.g. the state of each mailbox a
    service reads, or of a remote dependency the service waits out on its own), shown without
    deciding readiness."""
    details = details if details is not None else {}
    app = FastAPI(title=f"postroom {service}", docs_url=None, redoc_url=None)
    add_docs(app)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get("/health/ready")
    async def ready() -> Response:
        results: dict[str, str] = {}
        ok = True
        for name, check in checks.items():
            try:
                await asyncio.wait_for(check(), check_timeout)
                results[name] = "ok"
            except Exception as exc:
                ok = False
                results[name] = f"{type(exc).__name__}: {exc}"[:300] or "failed"
        facts: dict[str, object] = {}
        for name, detail in details.items():
            try:
                value = detail()
                if inspect.isawaitable(value):
                    value = await asyncio.wait_for(value, check_timeout)
            except Exception as exc:
                value = {"state": "unknown", "error": f"{type(exc).__name__}: {exc}"[:300]}
            facts[name] = value
        extra = {"details": facts} if details else {}
        if ok:
            return JSONResponse({"status": "ready", "service": service, "checks": results,
                                 **extra})
        return problem(503, "Not ready", "a dependency is unavailable", checks=results, **extra)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", ""))}
            for err in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors)
        return problem(422, "Invalid request", detail, errors=errors)

    @app.exception_handler(Exception)
    async def unhandled(_: Request, exc: Exception) -> JSONResponse:
        return problem(500, "Internal error", type(exc).__name__)

    return app


def add_docs(app: FastAPI, favicon_url: str = "/docs/assets/favicon-32x32.png") -> None:
    """``/docs``: Swagger UI from the files the ``swagger-ui-bundle-v2`` package ships, served
    under ``/docs/assets``. FastAPI's default page loads them from a CDN: a service on a
    network without one (or a browser with a strict policy) would show an empty page, and
    every visit would tell an outside host about the operator."""
    import swagger_ui_bundle

    assets = "/docs/assets"

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - API",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=favicon_url, oauth2_redirect_url="/docs/oauth2-redirect")

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def oauth2_redirect() -> Response:
        return get_swagger_ui_oauth2_redirect_html()

    app.mount(assets, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs")
