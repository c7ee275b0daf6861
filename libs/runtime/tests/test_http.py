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
