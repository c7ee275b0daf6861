"""mailbox-sync wiring: the tenant registry, the accounts and their workers, the HTTP API."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from postroom_runtime import ServiceRuntime, TenantRegistry, load_settings

from .accounts import AccountService
from .api import add_routes
from .config import MailboxSyncSettings
from .ingest import Ingestor
from .metrics import Metrics
from .provider import ProviderSync
from .vault import Vault, api_token

log = logging.getLogger("postroom_mailbox_sync")

MIGRATIONS = Path(__file__).parent / "migrations"


class MailboxSyncRuntime(ServiceRuntime):
    """The service runtime with its accounts (``.accounts``) and provider push (``.provider``)."""

    accounts: AccountService
    provider: ProviderSync
    ingestor: Ingestor


def build_runtime(settings: MailboxSyncSettings | None = None,
                  **runtime_kwargs: Any) -> MailboxSyncRuntime:
    """The whole service; ``await runtime.start()`` / ``stop()`` runs it in-process.

    ``runtime_kwargs`` go to :class:`ServiceRuntime` (tests pass a fresh metrics ``registry``
    and a ``span_exporter``)."""
    if settings is None:
        settings = load_settings(MailboxSyncSettings)
    runtime = MailboxSyncRuntime(settings, migrations=MIGRATIONS, **runtime_kwargs)
    metrics = Metrics(runtime.registry)
    vault = Vault.from_settings(settings.mailbox_sync_secret_key,
                                settings.mailbox_sync_secret_key_file)
    ingestor = Ingestor(runtime, metrics)
    service = AccountService(runtime, settings, vault, ingestor, metrics)
    provider = ProviderSync(runtime, settings, service, ingestor, metrics)
    runtime.accounts, runtime.provider, runtime.ingestor = service, provider, ingestor

    async def start_registry(rt: ServiceRuntime) -> None:
        ingestor.registry = TenantRegistry(rt.js)
        await ingestor.registry.start()

    async def stop_registry(_: ServiceRuntime) -> None:
        if ingestor.registry is not None:
            await ingestor.registry.stop()

    runtime.on_start.append(start_registry)
    runtime.on_started.append(service.start)  # the workers publish through the started relay
    runtime.on_stop.append(stop_registry)
    runtime.on_stop.append(provider.stop)
    runtime.on_stop.append(service.stop)
    runtime.details["accounts"] = service.summary
    add_routes(runtime.http, service, ingestor, settings,
               api_token(settings.mailbox_sync_api_token, settings.mailbox_sync_api_token_file))
    provider.add_routes(runtime.http)
    return runtime
