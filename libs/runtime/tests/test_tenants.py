"""The tenant registry against a real nats-server: KV records, the live view, user domains."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats
import pytest

from postroom_contracts import Tenant
from postroom_runtime.tenants import (
    TenantRegistry,
    delete_tenant,
    list_tenants,
    put_tenant,
    tenants_bucket,
)

OLD_RECORD = (b'{"slug":"legacy","name":"","domains":["intake.example.com"],'
              b'"mailboxes":{"*":{"actions":["extract"],"forward_to":[],"description":""}},'
              b'"enabled":true}')


def tenant(slug: str, *user_domains: str, **fields: Any) -> Tenant:
    return Tenant.model_validate({
        "slug": slug, "domains": ["intake.example.com"], "user_domains": list(user_domains),
        "pbxs": [{"name": "pbx", "networks": ["192.0.2.1/32"]}] if user_domains else [],
        **fields})


@pytest.fixture
async def js(nats_server: Any) -> AsyncIterator[Any]:
    nc = await nats.connect(nats_server.url)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


@pytest.fixture
async def registry(js: Any) -> AsyncIterator[TenantRegistry]:
    view = TenantRegistry(js, resync_seconds=30)
    await view.start()
    try:
        yield view
    finally:
        await view.stop()


async def until(predicate: Callable[[], bool], within: float = 15.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - the registry's watch task changes it
            await asyncio.sleep(0.02)


async def test_records_without_pbxs_stay_in_the_form_older_services_read(js: Any) -> None:
    kv = await tenants_bucket(js)
    await kv.put("legacy", OLD_RECORD)
    [legacy] = await list_tenants(js)
    assert legacy.slug == "legacy" and legacy.user_domains == []
    await put_tenant(js, legacy)  # e.g. `postroom tenants add --replace` with the same data
    assert (await kv.get("legacy")).value == OLD_RECORD
    await put_tenant(js, tenant("acme", "acme.example"))
    assert b'"pbxs":[{"name":"pbx"' in (await kv.get("acme")).value


async def test_the_live_view_follows_pbx_and_user_domain_changes(
    js: Any, registry: TenantRegistry
) -> None:
    assert registry.user_domain_owner("acme.example") is None
    acme = tenant("acme", "acme.example")
    await put_tenant(js, acme)
    await until(lambda: registry.user_domain_owner("acme.example") == acme)
    assert registry.user_domain_owner("intake.example.com") is None  # intake, not a user domain

    moved = tenant("acme", "acme.example", "acme-group.example")
    await put_tenant(js, moved)
    await until(lambda: registry.user_domain_owner("acme-group.example") == moved)

    await put_tenant(js, moved.model_copy(update={"enabled": False}))
    await until(lambda: registry.user_domain_owner("acme.example") is None)
    await delete_tenant(js, "acme")
    await until(lambda: registry.get("acme") is None and not registry.all())


async def test_a_user_domain_claimed_twice_is_nobodys(
    js: Any, registry: TenantRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="postroom_runtime.tenants")
    acme = tenant("acme", "acme.example")
    await put_tenant(js, acme)
    await until(lambda: registry.user_domain_owner("acme.example") == acme)
    # another tenant claims it too (the seed refuses this; the KV cannot)
    await put_tenant(js, tenant("evil", "acme.example"))
    await until(lambda: registry.get("evil") is not None)
    assert registry.user_domain_owner("acme.example") is None
    assert any("claimed twice" in r.getMessage() and r.tenants == ["acme", "evil"]  # type: ignore[attr-defined]
               for r in caplog.records)
    # one of acme's user domains made an intake domain by another tenant: not relayed either
    await delete_tenant(js, "evil")
    await until(lambda: registry.user_domain_owner("acme.example") == acme)
    await put_tenant(js, Tenant(slug="globex", domains=["acme.example"]))
    await until(lambda: registry.get("globex") is not None)
    assert registry.user_domain_owner("acme.example") is None


async def test_an_invalid_record_hides_no_other_tenant_and_keeps_its_last_valid_version(
    js: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="postroom_runtime.tenants")
    kv = await tenants_bucket(js)
    await put_tenant(js, tenant("acme", "acme.example"))
    await kv.put("broken", b'{"slug":"broken","domains":"not a list"}')
    # a service starting now still knows every valid tenant
    assert [t.slug for t in await list_tenants(js)] == ["acme"]
    view = TenantRegistry(js, resync_seconds=30)
    await view.start()
    try:
        assert view.get("acme") is not None and view.get("broken") is None
        # acme's record is overwritten with something invalid: acme as it was stays in force,
        # through the live watch and through a full reload
        await kv.put("acme", b'{"slug":"acme","domains":42}')
        await until(lambda: any(getattr(r, "tenant", None) == "acme" for r in caplog.records))
        await view.reload()
        acme = view.get("acme")
        assert acme is not None and acme.user_domains == ["acme.example"]
    finally:
        await view.stop()
    assert {getattr(r, "tenant", None) for r in caplog.records} >= {"acme", "broken"}
