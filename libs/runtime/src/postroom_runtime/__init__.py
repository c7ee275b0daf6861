"""Runtime shared by Postroom services: settings, logs, telemetry, JetStream, store, blobs."""

from .blobs import BlobCorrupt, BlobNotFound, BlobStore, FilesystemBlobStore, NatsBlobStore
from .delivery import Consumer, DeliveryPolicy, Outbox, OutboxRelay, PoisonMessage, backoff_delay
from .http import build_http_app, problem
from .jetstream import MSG_ID, event_headers, provision_streams, publish_event
from .logs import mail_key_var, setup_logging
from .service import ServiceRuntime, run
from .settings import ConfigError, RuntimeSettings, load_settings
from .store import Store, add_runtime_tables, create_runtime_tables
from .tasks import cancel_and_wait
from .tenants import TenantRegistry, load_seed, seed_tenants
from .workers import ProcessPool, WorkerDied

__all__ = [
    "MSG_ID", "BlobCorrupt", "BlobNotFound", "BlobStore", "ConfigError", "Consumer",
    "DeliveryPolicy", "FilesystemBlobStore", "NatsBlobStore", "Outbox", "OutboxRelay",
    "PoisonMessage", "ProcessPool", "RuntimeSettings", "ServiceRuntime", "Store",
    "TenantRegistry", "WorkerDied",
    "add_runtime_tables", "backoff_delay", "build_http_app", "cancel_and_wait",
    "create_runtime_tables",
    "event_headers", "load_seed", "load_settings", "mail_key_var", "problem",
    "provision_streams", "publish_event", "run", "seed_tenants", "setup_logging",
]
