from __future__ import annotations

import sys
from pathlib import Path

# importlib mode: make the shared helpers importable (responder_harness)
sys.path.insert(0, str(Path(__file__).parent))

from collections.abc import AsyncIterator, Callable
from typing import Any

import nats
import pytest
from responder_harness import Bus, FakeHttp, FakeModel, Service, fake_ai_core, start_service

from postroom_runtime import provision_streams


@pytest.fixture
async def bus(nats_server: Any) -> AsyncIterator[Bus]:
    nc = await nats.connect(nats_server.url)
    await provision_streams(nc.jetstream())
    try:
        yield Bus(nc)
    finally:
        await nc.close()


@pytest.fixture
def model() -> FakeModel:
    return FakeModel()


@pytest.fixture
async def ai_core(model: FakeModel) -> AsyncIterator[FakeHttp]:
    server = fake_ai_core(model)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def start(nats_server: Any, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start ai-responder in this process (stopped at the end)."""
    started: list[Service] = []

    async def go(**overrides: Any) -> Service:
        service = await start_service(nats_server.url, tmp_path, **overrides)
        started.append(service)
        return service

    yield go
    for service in started:
        await service.http.aclose()
        await service.runtime.stop()


@pytest.fixture
async def core_service(start: Callable[..., Any], ai_core: FakeHttp) -> Service:
    """ai-responder drafting with the fake AI core."""
    service: Service = await start(ai_backend="ai-core", ai_api_url=ai_core.url,
                                   ai_api_key="core-key", reply_api_key="review-key")
    return service
