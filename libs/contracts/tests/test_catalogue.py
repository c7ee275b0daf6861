import json
from typing import Any

import pytest
from pydantic import ValidationError

from postroom_contracts import (
    CATALOGUE,
    ArcVerdict,
    BlobRef,
    DkimVerdict,
    DmarcVerdict,
    DocumentStored,
    Event,
    IprevVerdict,
    MailParsed,
    MailReceived,
    SpfVerdict,
    Tenant,
    derive_event_id,
    mail_key,
    synthetic_message_id,
)
from postroom_contracts.catalogue import asyncapi_document, check, event_schema

SHA = "ab" * 32
BLOB = BlobRef(bucket="postroom-blobs", key=f"sha256/{SHA}", size=10, sha256=SHA)


def _received() -> MailReceived:
    key = mail_key("acme", "<po-1@supplier.example>")
    return MailReceived(
        event_id=derive_event_id(key, MailReceived.event_type),
        tenant="acme",
        mail_key=key,
        message_id="<po-1@supplier.example>",
        mailbox="orders",
        envelope_from="supplier@example.com",
        recipients=["orders+acme@intake.example.com"],
        size=10,
        raw=BLOB,
    )


SAMPLES: dict[str, dict[str, Any]] = {
    "mail.received": {},
    "document.stored": dict(document_id="d1", index=0, filename="po.pdf",
                            declared_content_type="application/pdf",
                            sniffed_content_type="application/pdf", size=10, sha256=SHA,
                            blob=BLOB, supported=True),
    "mail.parsed": dict(message_id="<po-1@supplier.example>", body_text="hello"),
    "mail.failed": dict(stage="parse", error="boom"),
    "mail.authenticated": dict(
        message_id="<po-1@supplier.example>", authserv_id="postroom.local",
        spf=SpfVerdict(result="pass", identity="mailfrom", domain="supplier.example",
                       smtp_mailfrom="supplier.example", smtp_helo="mail.supplier.example"),
        dkim=[DkimVerdict(result="pass", domain="supplier.example", selector="sel",
                          algorithm="rsa-sha256", signature_prefix="IrEXg2hU")],
        dmarc=DmarcVerdict(result="pass", header_from="supplier.example", policy="reject",
                           policy_domain="supplier.example", spf_alignment="relaxed",
                           dkim_alignment="relaxed", spf_aligned=True, dkim_aligned=True),
        arc=ArcVerdict(result="pass", chain_length=1),
        iprev=IprevVerdict(result="pass", ip="192.0.2.7", hostname="mail.supplier.example"),
        authentication_results="postroom.local; spf=pass smtp.mailfrom=supplier.example",
    ),
    "voicemail.transcribed": dict(
        message_id="<vm1@pbx.example>", document_id="d1", index=1, filename="msg0001.wav",
        status="transcribed", text="call me back", confidence=0.91, engine="moonshine",
        language="en-US", duration_seconds=4.2, processing_seconds=0.6, real_time_factor=0.14,
        audio=dict(container="WAV", encoding="ULAW", sample_rate=8000, channels=1),
        call=dict(caller_name="John Smith", caller_number="5551234", mailbox="201"),
        words=[dict(word="call", start_seconds=0.1, end_seconds=0.4, confidence=0.9)]),
    "mail.classified": dict(
        email_id="<po-4411@supplier.example>", classification="order", confidence=0.9,
        processed_at="2026-12-01T09:00:00Z", processor_id="classifier-1",
        processing_time_ms=2.4, scores={"order": 0.9, "unknown": 0.1},
        model_version="2026.12.1-abc123", spam_score=None),
    "mail.label_corrected": dict(
        correction_id="c-0001", email_id="<po-4411@supplier.example>", label="order",
        previous_label="support", previous_model_version="2026.12.1-abc123",
        corrected_by="acme-operator", raw=BLOB),
    "reply.drafted": dict(
        reply_id="r0123456789abcdef", mailbox="support", to=["a@b.example"],
        subject="Re: x", body_text="hi", body_html="<p>hi</p>", in_reply_to="<m1@b.example>",
        references=["<m1@b.example>"], language="en", model="smollm2-135m", backend="local",
        prompt_version="reply-v1",
        sources=[{"kind": "knowledge", "ref": "hours", "title": "Support hours"}],
        status="held", held_reasons=["'42' is in neither the thread nor the knowledge base"],
        prompt_tokens=120, completion_tokens=30, latency_ms=812.5),
    "reply.reviewed": dict(reply_id="r0123456789abcdef", decision="approved",
                           reviewed_by="acme-operator", body_text="edited"),
    "reply.skipped": dict(reason="loop-guard", detail="Auto-Submitted: auto-replied"),
    "delivery.requested": dict(delivery_id="dlv-0001", kind="voicemail",
                               to=["alice@acme.example"], original=BLOB, template="voicemail",
                               template_data={"transcripts": [{"text": "call me"}]}),
    "delivery.sent": dict(delivery_id="dlv-0001", kind="voicemail",
                          message_id="<dlv-0001@postroom>", to=["alice@acme.example"],
                          relay="127.0.0.1:25", smtp_response="250 2.0.0 Ok", attempts=1),
    "delivery.failed": dict(delivery_id="dlv-0001", kind="voicemail",
                            to=["alice@acme.example"], permanent=True, smtp_code=550,
                            error="550 5.1.1 no such user", attempts=1),
}


@pytest.mark.parametrize("event", CATALOGUE, ids=lambda e: e.event_type)
def test_every_event_round_trips_with_the_common_fields(event: type[Event]) -> None:
    cause = _received()
    fields = SAMPLES[event.event_type]
    instance = cause if event is MailReceived else event.caused_by(cause, **fields)
    data = json.loads(instance.model_dump_json())
    for field in ("event_id", "occurred_at", "tenant", "mail_key", "causation_id", "version"):
        assert field in data
    assert data["version"] == event.schema_version
    assert event.model_validate_json(instance.model_dump_json()) == instance
    assert instance.nats_subject == f"postroom.{event.event_type}.acme"


def test_caused_events_have_derived_ids_and_point_at_their_cause() -> None:
    cause = _received()
    a = MailParsed.caused_by(cause, message_id="<x>")
    b = MailParsed.caused_by(cause, message_id="<x>")
    other = DocumentStored.caused_by(cause, part="1", **SAMPLES["document.stored"])
    assert a.event_id == b.event_id  # a redelivery re-derives the same id
    assert a.causation_id == cause.event_id
    assert other.event_id != a.event_id


def test_consumers_ignore_unknown_fields_from_newer_producers() -> None:
    data = json.loads(_received().model_dump_json())
    data["some_future_field"] = 1
    assert MailReceived.model_validate(data).message_id == "<po-1@supplier.example>"


def test_tenant_and_payload_validation() -> None:
    with pytest.raises(ValidationError):
        MailReceived.model_validate({**json.loads(_received().model_dump_json()), "tenant": "A.B"})
    with pytest.raises(ValidationError):
        Tenant(slug="acme", domains=[])
    tenant = Tenant(slug="acme", domains=["Intake.Example.com."], mailboxes={"Orders": {}})
    assert tenant.domains == ["intake.example.com"]
    assert tenant.route("ORDERS") is not None and tenant.route("other") is None


def test_synthetic_message_id_is_deterministic() -> None:
    a = synthetic_message_id("a@x", "b@y", "PO", "Mon, 1 Jan 2024", "0" * 64)
    assert a == synthetic_message_id("a@x", "b@y", "PO", "Mon, 1 Jan 2024", "0" * 64)
    assert a != synthetic_message_id("a@x", "b@y", "PO 2", "Mon, 1 Jan 2024", "0" * 64)
    assert a.startswith("<synthetic-") and a.endswith("@postroom.generated>") and len(a) == 63


def test_synthetic_message_ids_of_different_mails_do_not_collide() -> None:
    base = ("a@x", "b@y", "PO", "Mon, 1 Jan 2024", "0" * 64)
    variants = [
        # the same characters split differently between neighbouring fields
        ("a@xb", "@y", "PO", "Mon, 1 Jan 2024", "0" * 64),
        ("a@x", "b@yP", "O", "Mon, 1 Jan 2024", "0" * 64),
        ("a@x", "b@y", "POMon,", " 1 Jan 2024", "0" * 64),
        ('a@x", "b@y', "", "PO", "Mon, 1 Jan 2024", "0" * 64),  # a separator inside a field
        # same headers, another body
        ("a@x", "b@y", "PO", "Mon, 1 Jan 2024", "1" * 64),
    ]
    ids = {synthetic_message_id(*fields) for fields in [base, *variants]}
    assert len(ids) == 1 + len(variants)


def test_mail_key_with_content_tells_apart_mails_that_reuse_a_message_id() -> None:
    first = mail_key("acme", "<po-1@x>", "a" * 64)
    assert first == mail_key("acme", " <po-1@x> ", "a" * 64)  # stable for the same mail
    assert first != mail_key("acme", "<po-1@x>", "b" * 64)  # same Message-ID, other content
    assert first != mail_key("globex", "<po-1@x>", "a" * 64)
    assert first != mail_key("acme", "<po-1@x>")  # the key of mails from before content keys
    assert len(first) == 32


def test_committed_schemas_and_asyncapi_match_the_models() -> None:
    assert check() == []


def test_asyncapi_lists_every_event_on_its_subject() -> None:
    doc = asyncapi_document()
    addresses = {c["address"] for c in doc["channels"].values()}
    for event in CATALOGUE:
        assert f"postroom.{event.event_type}.{{tenant}}" in addresses


def test_field_constraints_are_in_the_schema() -> None:
    schema = event_schema(MailReceived)
    assert "raw" in schema["required"] and schema["x-subject"] == "postroom.mail.received.{tenant}"
