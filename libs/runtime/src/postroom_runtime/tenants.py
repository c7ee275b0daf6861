"""The tenant registry, read from NATS KV and kept current by a watcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import yaml
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NoKeysError, NotFoundError
from pydantic import ValidationError

from postroom_contracts import TENANTS_BUCKET, Tenant, TenantSeed

log = logging.getLogger(__name__)


async def tenants_bucket(js: JetStreamContext, replicas: int = 1):  # type: ignore[no-untyped-def]
    try:
        return await js.key_value(TENANTS_BUCKET)
    except (BucketNotFoundError, NotFoundError):
        return await js.create_key_value(
            KeyValueConfig(bucket=TENANTS_BUCKET, history=5, storage=StorageType.FILE,
                           replicas=replicas, description="Postroom tenant registry")
        )


def load_seed(path: Path) -> list[Tenant]:
    """Read a seed file; a clear error names the file and the problem."""
    try:
        data = yaml.safe_load(Path(path).read_text())
        return TenantSeed.model_validate(data).tenants
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ValueError(f"tenant seed file {path}: {exc}") from exc


async def put_tenant(js: JetStreamContext, tenant: Tenant) -> None:
    kv = await tenants_bucket(js)
    await kv.put(tenant.slug, tenant.registry_json())


async def delete_tenant(js: JetStreamContext, slug: str) -> bool:
    kv = await tenants_bucket(js)
    try:
        await kv.get(slug)
    except (KeyNotFoundError, NotFoundError):
        return False
    await kv.delete(slug)
    return True


async def list_tenants(js: JetStreamContext, invalid: set[str] | None = None) -> list[Tenant]:
    """Every valid tenant record. A record that does not validate (written by hand, or by a
    newer Postroom) is logged and left out, its key added to ``invalid``: one bad record
    never hides the others."""
    kv = await tenants_bucket(js)
    try:
        keys = await kv.keys()
    except NoKeysError:
        return []
    out = []
    for key in sorted(keys):
        try:
            entry = await kv.get(key)
        except (KeyNotFoundError, NotFoundError):
            continue
        if not entry.value:
            continue
        try:
            out.append(Tenant.model_validate_json(entry.value))
        except ValidationError as exc:
            log.error("invalid tenant record ignored", extra={"tenant": key, "error": str(exc)})
            if invalid is not None:
                invalid.add(key)
    return out


async def seed_tenants(js: JetStreamContext, tenants: list[Tenant], overwrite: bool = False) -> int:
    """Write seed tenants; existing ones are kept unless ``overwrite``. Returns count written."""
    kv = await tenants_bucket(js)
    written = 0
    for tenant in tenants:
        if not overwrite:
            try:
                await kv.get(tenant.slug)
                continue
            except (KeyNotFoundError, NotFoundError):
                pass
        await kv.put(tenant.slug, tenant.registry_json())
        written += 1
    return written


class TenantRegistry:
    """An in-memory view of the registry, updated live from the KV bucket."""

    def __init__(self, js: JetStreamContext, resync_seconds: float = 30.0) -> None:
        self.js = js
        self.resync_seconds = resync_seconds
        self._tenants: dict[str, Tenant] = {}
        self._task: asyncio.Task[None] | None = None
        self.loaded = asyncio.Event()
        self._user_domains: dict[str, Tenant] | None = None  # built on first use after a change

    def get(self, slug: str) -> Tenant | None:
        tenant = self._tenants.get(slug)
        return tenant if tenant is not None and tenant.enabled else None

    def domains(self) -> set[str]:
        return {d for t in self._tenants.values() if t.enabled for d in t.domains}

    def user_domain_owner(self, domain: str) -> Tenant | None:
        """The enabled tenant whose user domain ``domain`` (normalised) is. None when no
        tenant claims it, or when it is claimed twice or is also an intake domain: such a
        domain is refused rather than given to one of the claimants."""
        if self._user_domains is None:
            self._user_domains = self._index_user_domains()
        return self._user_domains.get(domain)

    def _index_user_domains(self) -> dict[str, Tenant]:
        enabled = [t for t in self._tenants.values() if t.enabled]
        intake = {d for t in enabled for d in t.domains}
        owners: dict[str, list[Tenant]] = {}
        for tenant in enabled:
            for domain in tenant.user_domains:
                owners.setdefault(domain, []).append(tenant)
        index = {}
        for domain, claimants in owners.items():
            if len(claimants) == 1 and domain not in intake:
                index[domain] = claimants[0]
            else:
                log.error("user domain claimed twice or also an intake domain: refused", extra={
                    "domain": domain, "tenants": sorted(t.slug for t in claimants)})
        return index

    def all(self) -> list[Tenant]:
        return list(self._tenants.values())

    async def reload(self) -> None:
        invalid: set[str] = set()
        fresh = {t.slug: t for t in await list_tenants(self.js, invalid)}
        for key in invalid:  # a record made invalid: the last valid version stays in force
            if key in self._tenants:
                fresh[key] = self._tenants[key]
        self._tenants = fresh
        self._user_domains = None
        self.loaded.set()

    def _apply(self, key: str, value: bytes | None, deleted: bool) -> None:
        self._user_domains = None
        if deleted or not value:
            self._tenants.pop(key, None)
            return
        try:
            self._tenants[key] = Tenant.model_validate_json(value)
        except ValidationError as exc:
            log.error("invalid tenant record ignored; the last valid version stays in force",
                      extra={"tenant": key, "error": str(exc)})

    async def start(self) -> None:
        await self.reload()
        self._task = asyncio.create_task(self._watch(), name="tenant-registry-watch")

    async def _watch(self) -> None:
        while True:
            try:
                kv = await tenants_bucket(self.js)
                watcher = await kv.watchall()
                try:
                    while True:
                        try:
                            entry = await watcher.updates(timeout=self.resync_seconds)
                        except Exception:  # timeout: resync in case a watch was lost
                            await self.reload()
                            continue
                        if entry is None:
                            continue
                        self._apply(entry.key, entry.value, entry.operation in ("DEL", "PURGE"))
                finally:
                    with contextlib.suppress(Exception):
                        await watcher.stop()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("tenant watch restarting", extra={"error": str(exc)})
                await asyncio.sleep(1)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
