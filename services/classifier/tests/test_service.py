"""The classifier as a process on a real nats-server: mail.parsed events in (the raw mail in
the blob store as the ingress puts it), mail.classified read back from the stream, the rows
in its own store (SQLite and PostgreSQL) through its HTTP API."""

from __future__ import annotations

from typing import Any

import httpx
from classifier_harness import Bus, consumer_idle, until

from postroom_classifier.handlers import classification_id
from postroom_contracts import MailClassified, RouteDecision
from postroom_runtime import event_headers
from postroom_testing.procs import free_port

PBX_ROUTE = RouteDecision(kind="pbx", pbx="office", matched_by="network", transcribe=True,
                          language="en-US", forward_to=["alice@acme.example"],
                          forward_mode="original")

# (expected label, subject, body, extra raw headers, attachments (filename, type), route)
MAILS: list[tuple[str, str, str, str, list[tuple[str, str]], RouteDecision | None]] = [
    ("promotion", "Flash sale: 30% off all office furniture",
     "Shop now and save on desks and chairs. Use code SPRING30 at checkout. "
     "View in browser: https://deals.example/123\nUnsubscribe: https://deals.example/u",
     "List-Unsubscribe: <https://deals.example/u>\r\nPrecedence: bulk\r\n", [], None),
    ("meeting", "Réunion budget jeudi à 10:00",
     "Bonjour Paul,\n\nSeriez-vous disponible jeudi à 10:00 pour faire le point sur le "
     "budget ? Je vous ai envoyé une invitation.\n\nCordialement,\nClaire",
     "", [("invite.ics", "text/calendar")], None),
    ("voicemail", "Voice Message from Robert Miller (5551234)",
     "You have a new voice message.\nCaller: Robert Miller 5551234\nMailbox: 201\n"
     "Duration: 00:00:23", "Auto-Submitted: auto-generated\r\n",
     [("Msg0001.WAV", "audio/wav")], PBX_ROUTE),
    ("order", "Bestellung BE-20931",
     "Sehr geehrte Damen und Herren,\n\nanbei erhalten Sie unsere Bestellung BE-20931 über "
     "40 Stück Bürostühle. Gewünschter Liefertermin: 12.01.2027.\n\nMit freundlichen "
     "Grüßen\nStefan Keller", "", [("BE-20931.pdf", "application/pdf")], None),
    ("spam", "You have WON 2,5 million dollars!!!",
     "Congratulations, you were selected to receive 2,5 million USD. Send your bank details "
     "and a processing fee to claim the prize. Act now!!!",
     "Authentication-Results: mx.acme.example; spf=fail; dmarc=fail header.from=win.example\r\n",
     [], None),
]


async def test_labelled_mails_are_classified_published_and_stored(
        bus: Bus, service_process: Any, nats_server: Any, database_url: str) -> None:
    port = free_port()
    service = service_process(
        ["postroom-classifier"], name="classifier",
        env={"NATS_URL": nats_server.url, "HTTP_PORT": str(port), "BLOB_BACKEND": "nats",
             "DATABASE_URL": database_url, "CLASSIFIER_PROCESSOR_ID": "classifier-test",
             "CONSUMER_BACKOFF_BASE_SECONDS": "0.1", "LOG_LEVEL": "INFO"},
        ready_url=f"http://127.0.0.1:{port}/health/ready")
    await service.astart()

    sent = [(label, await bus.parsed(*rest)) for label, *rest in MAILS]
    got: dict[str, MailClassified] = {}
    for label, event in sent:
        data = await bus.wait_for("mail.classified", event.mail_key)
        c = MailClassified.model_validate(data)
        got[label] = c
        assert c.classification == label, (label, c.scores)
        assert c.event_id == classification_id(event) and c.causation_id == event.event_id
        assert c.email_id == event.message_id and c.processor_id == "classifier-test"
        assert c.confidence == c.scores[label] == max(c.scores.values())
        assert set(c.scores) == {"meeting", "promotion", "intro", "voicemail", "order",
                                 "support", "spam", "unknown"}
        assert abs(sum(c.scores.values()) - 1) < 1e-3
        assert c.processing_time_ms > 0 and c.spam_score is None
        assert c.model_version.startswith("logreg-tfidf-")

    # a redelivery (another message id, same event) is recognised: no second event or row
    promo_event = next(event for label, event in sent if label == "promotion")
    await bus.js.publish(promo_event.nats_subject, promo_event.model_dump_json().encode(),
                         headers={**event_headers(promo_event), "Nats-Msg-Id": "again-1"})
    await until(lambda: consumer_idle(bus), "the consumer still holds messages")
    assert len([e for e in await bus.events("mail.classified")
                if e["mail_key"] == promo_event.mail_key]) == 1

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        rows = (await http.get("/classifications", params={"tenant": "acme"})).json()
        assert sorted(r["label"] for r in rows) == sorted(label for label, *_ in MAILS)
        promo = got["promotion"]
        result = (await http.get(f"/results/{promo.email_id}")).json()
        assert result == {"email_id": promo.email_id, "classification": "promotion",
                          "confidence": promo.confidence,
                          "processed_at": result["processed_at"],
                          "processor_id": "classifier-test",
                          "processing_time_ms": promo.processing_time_ms}
        assert result["processed_at"].endswith("Z")
        assert (await http.get("/results/<nobody@example.org>")).status_code == 404
        model = (await http.get("/model")).json()
        assert model["model_version"] == promo.model_version
        metrics = (await http.get("/metrics")).text
    for label, *_ in MAILS:
        assert f'postroom_classifier_classifications_total{{label="{label}"}} 1.0' in metrics
    assert "postroom_classifier_classification_seconds_count 5.0" in metrics
