"""mailbox-sync's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.mails = Counter(
            "postroom_mailbox_sync_mails", "Mails read, by source (imap, webhook) and result "
            "(ingested, duplicate, rejected)", ["source", "result"], registry=registry)
        self.ingest_seconds = Histogram(
            "postroom_mailbox_sync_ingest_duration_seconds",
            "From the raw mail in hand to its event committed (blob, dedup, outbox)",
            ["source"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry)
        self.connects = Counter(
            "postroom_mailbox_sync_imap_connects",
            "IMAP connections by result (ok, auth_failed, error)", ["result"],
            registry=registry)
        self.idle_cycles = Counter(
            "postroom_mailbox_sync_imap_idle_cycles",
            "IDLE commands ended, by why (push, renew, probe)", ["reason"], registry=registry)
        self.refreshes = Counter(
            "postroom_mailbox_sync_imap_refreshes",
            "Connections ended on purpose after IMAP_REFRESH_SECONDS and opened again",
            registry=registry)
        self.folders = Gauge(
            "postroom_mailbox_sync_folders", "Watched folders by state", ["state"],
            registry=registry)
        self.history = Counter(
            "postroom_mailbox_sync_provider_syncs",
            "Provider history syncs by kind (incremental, full_resync)", ["kind"],
            registry=registry)
