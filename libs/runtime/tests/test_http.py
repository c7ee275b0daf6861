"""The HTTP surface every service shares: /docs is Swagger UI served by the service itself."""

from __future__ import annotations

import re

import httpx
from prometheus_client import CollectorRegistry

from postroom_runtime.http import build_http_app


async def test_the_api_docs_load_nothing_from_another_host() -> None:
    app = build_http_app("mailer", {}, registry=CollectorRegistry())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://mailer") as client:
        page = await client.get("/docs")
        assert page.status_code == 200
        urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", page.text)
        assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css",
                "/openapi.json"} <= set(urls), urls
        assert not [u for u in urls if "//" in u], urls  # no scheme, no host of its own
        assert "cdn" not in page.text.lower()
        for url in urls:
            response = await client.get(url)
            assert response.status_code == 200, url
            assert response.content, url
        assert (await client.get("/docs/oauth2-redirect")).status_code == 200
        assert "/docs" not in (await client.get("/openapi.json")).json()["paths"]


async def test_details_are_reported_without_deciding_readiness() -> None:
    async def remote() -> dict[str, str]:
        return {"state": "unavailable", "error": "HTTP 503"}

    async def broken() -> dict[str, str]:
        raise ConnectionError("refused")

    async def store() -> None:
        return None

    app = build_http_app("svc", {"store": store}, registry=CollectorRegistry(),
                         details={"remote": remote, "broken": broken,
                                  "accounts": lambda: {"a": "ok"}})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        ready = await client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["checks"] == {"store": "ok"}
    assert body["details"] == {
        "remote": {"state": "unavailable", "error": "HTTP 503"},
        "broken": {"state": "unknown", "error": "ConnectionError: refused"},
        "accounts": {"a": "ok"}}
