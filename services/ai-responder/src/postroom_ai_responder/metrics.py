"""ai-responder's Prometheus metrics: outcomes, backend latency and tokens, queue, breaker."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.queued = Counter(
            "postroom_ai_responder_queued", "Mails queued for a draft", registry=registry)
        self.skipped = Counter(
            "postroom_ai_responder_skipped",
            "Mails that asked for a reply and got none, by reason", ["reason"],
            registry=registry)
        self.drafts = Counter(
            "postroom_ai_responder_drafts",
            "Replies drafted, by backend and status (pending, held, auto)",
            ["backend", "status"], registry=registry)
        self.backend_calls = Counter(
            "postroom_ai_responder_backend_calls",
            "Backend calls by outcome (ok, error, breaker_open)", ["backend", "outcome"],
            registry=registry)
        self.latency = Histogram(
            "postroom_ai_responder_backend_seconds", "Time of one answered backend call",
            ["backend"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 60, 120),
            registry=registry)
        self.tokens = Counter(
            "postroom_ai_responder_tokens", "Tokens used, by backend and kind (prompt, "
            "completion)", ["backend", "kind"], registry=registry)
        self.decisions = Counter(
            "postroom_ai_responder_decisions", "Decisions on drafts (approved, rejected)",
            ["decision"], registry=registry)
        self.queue = Gauge(
            "postroom_ai_responder_queue", "Replies waiting for the backend",
            registry=registry)
        self.breaker = Gauge(
            "postroom_ai_responder_breaker_state",
            "Circuit breaker of the backend: 0 closed, 1 half-open, 2 open", registry=registry)
