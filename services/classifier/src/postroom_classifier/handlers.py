"""Pure rules of the classifier: the model's input from a mail.parsed event (and the raw
mail's header block), and the id of what we publish. No I/O here."""

from __future__ import annotations

import math
from dataclasses import dataclass
from email.message import Message

from postroom_classify.features import (
    MAX_BODY,
    MailFeatures,
    dmarc_verdict,
    headers_of_interest,
)
from postroom_classify.model import Classification
from postroom_contracts import MailParsed, derive_event_id


def features(event: MailParsed, headers: Message | None = None) -> MailFeatures:
    """What the model sees: mail.parsed's subject, body and document types; the headers of
    interest and the DMARC verdict from the raw mail's header block when it was read."""
    return MailFeatures(
        subject=event.subject or "",
        body=(event.body_text or "")[:MAX_BODY],
        headers=headers_of_interest(headers) if headers is not None else {},
        attachments=[(d.content_type or "application/octet-stream").lower()
                     for d in event.documents],
        dmarc=dmarc_verdict(headers) if headers is not None else "none",
        routed=event.route is not None,
    )


def classification_id(event: MailParsed) -> str:
    return derive_event_id(event.event_id, "mail.classified")


@dataclass(frozen=True)
class Decision:
    label: str
    confidence: float
    scores: dict[str, float]
    spam_by_spamd: bool  # spamd's verdict made the label spam (the model said otherwise)


def spamd_confidence(score: float, threshold: float) -> float:
    """How sure spamd's score makes us that a mail is spam: 0.5 at the threshold, a logistic
    curve over the points above it (threshold + 3 points: 0.95; GTUBE's 1000: 1.0). spamd's
    points are log-odds-like by construction (rule scores are fitted by a perceptron)."""
    return 1.0 / (1.0 + math.exp(-max(min(score - threshold, 50.0), -50.0)))


def decide(result: Classification, spam_score: float | None,
           threshold: float | None) -> Decision:
    """The label: spamd's verdict when it says spam, otherwise the model's.

    spamd's rules and scores are tuned on large real-world corpora for a known false
    positive rate at the required score; the model has only seen the project's synthetic
    corpus, so a mail spamd calls spam is labelled spam, with the confidence its score gives
    (or the model's spam score if higher). Below the threshold spamd's score says nothing
    about which of the other seven labels fits, so the model decides alone. The scores stay
    a distribution: spam takes the confidence, the other labels share the rest in the
    model's proportions."""
    scores = dict(result.scores)
    if spam_score is None or threshold is None or spam_score < threshold:
        return Decision(result.label, result.confidence, scores, False)
    confidence = round(max(spamd_confidence(spam_score, threshold), scores.get("spam", 0.0)),
                       6)
    rest = 1.0 - scores.get("spam", 0.0)
    for label in scores:
        if label != "spam":
            scores[label] = round(scores[label] * (1.0 - confidence) / rest, 6) if rest else 0.0
    scores["spam"] = confidence
    return Decision("spam", confidence, scores, result.label != "spam")
