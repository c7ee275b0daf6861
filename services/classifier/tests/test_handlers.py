"""The model's input from a mail.parsed event and the raw mail's header block."""

from __future__ import annotations

import pytest

from postroom_classifier.handlers import classification_id, decide, features, spamd_confidence
from postroom_classify import LABELS, Classification
from postroom_classify.features import parse_headers, structure_tokens
from postroom_contracts import (
    BlobRef,
    DocumentRef,
    MailParsed,
    RouteDecision,
    derive_event_id,
)

BLOB = BlobRef(bucket="postroom-blobs", key="sha256/" + "0" * 64, size=1, sha256="0" * 64,
               content_type="application/octet-stream")


def _event(**fields: object) -> MailParsed:
    base: dict[str, object] = dict(event_id="e-1", tenant="acme", mail_key="m" * 32,
                                   message_id="<a@b.example>", subject="Hello",
                                   body_text="Body")
    base.update(fields)
    return MailParsed(**base)  # type: ignore[arg-type]


def test_without_headers_only_the_event_speaks() -> None:
    f = features(_event())
    assert (f.subject, f.body, f.headers, f.attachments, f.dmarc, f.routed) == (
        "Hello", "Body", {}, [], "none", False)
    assert structure_tokens(f).split() == ["s_att_none", "s_dmarc_none", "s_body_short"]


def test_headers_documents_and_route() -> None:
    raw = (b"From: news@shop.example\r\nSubject: Sale\r\n"
           b"List-Unsubscribe: <https://shop.example/u>\r\nPrecedence: bulk\r\n"
           b"Authentication-Results: mx.acme.example; spf=pass; dkim=none; dmarc=fail\r\n"
           b"\r\nbody ignored here\r\n")
    doc = DocumentRef(document_id="d1", index=0, filename="a.wav", content_type="audio/wav",
                      size=1, sha256="0" * 64, blob=BLOB)
    route = RouteDecision(kind="pbx", pbx="office", matched_by="network", transcribe=True,
                          language="en-US", forward_to=["a@acme.example"],
                          forward_mode="original")
    f = features(_event(documents=[doc], document_ids=["d1"], route=route),
                 parse_headers(raw))
    assert f.headers == {"list-unsubscribe": "<https://shop.example/u>", "precedence": "bulk"}
    assert f.attachments == ["audio/wav"] and f.dmarc == "fail" and f.routed
    assert {"s_list_unsubscribe", "s_precedence_bulk", "s_att_audio", "s_dmarc_fail",
            "s_routed"} <= set(structure_tokens(f).split())


def test_the_event_id_is_derived_from_mail_parsed() -> None:
    assert classification_id(_event()) == derive_event_id("e-1", "mail.classified")
    assert classification_id(_event()) != classification_id(_event(event_id="e-2"))


def _result(label: str, **scores: float) -> Classification:
    full = {name: 0.0 for name in LABELS}
    full.update(scores)
    return Classification(label, full[label], full, "v1", 0.001)


def test_spamd_below_the_threshold_leaves_the_model_alone() -> None:
    r = _result("order", order=0.8, support=0.15, spam=0.05)
    d = decide(r, 2.1, 5.0)
    assert (d.label, d.confidence, d.scores, d.spam_by_spamd) == ("order", 0.8, r.scores, False)
    assert decide(r, None, None).label == "order"


def test_spamd_spam_verdict_makes_the_label_spam_and_keeps_a_distribution() -> None:
    r = _result("order", order=0.8, support=0.15, spam=0.05)
    d = decide(r, 1002.5, 5.0)  # GTUBE
    assert d.label == "spam" and d.spam_by_spamd and d.confidence == 1.0
    assert d.scores["spam"] == 1.0 and d.scores["order"] == 0.0
    d = decide(r, 8.0, 5.0)  # three points over: ~0.95
    assert d.label == "spam" and d.confidence == pytest.approx(0.952574, abs=1e-6)
    assert sum(d.scores.values()) == pytest.approx(1.0, abs=1e-5)
    assert d.scores["order"] / d.scores["support"] == pytest.approx(0.8 / 0.15, rel=1e-4)
    assert d.confidence == max(d.scores.values())
    # the model was surer than spamd's margin: its spam score stays
    sure = _result("spam", spam=0.99, order=0.01)
    d = decide(sure, 5.5, 5.0)
    assert (d.label, d.confidence, d.spam_by_spamd) == ("spam", 0.99, False)
    assert spamd_confidence(5.0, 5.0) == 0.5
