"""Corrections (mail.label_corrected, as the console publishes them) on a real nats-server and
the classifier's own store (SQLite and PostgreSQL): stored with the mail's model input, the
latest per mail wins, a redelivery changes nothing, a correction without its raw mail is kept
without input. Then the loop the console's user sees: correct a mail, train (the CLI, or the
service itself), the service takes the new version and the same mail gets the corrected
label."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from classifier_harness import Bus, consumer_idle, until

from postroom_classify import registry
from postroom_contracts import MailClassified, MailLabelCorrected, derive_event_id
from postroom_runtime.store import Store
from postroom_testing.procs import STARTUP_SECONDS, free_port

ROOT = Path(__file__).resolve().parents[3]
DURABLE = "classifier-label-corrected"

# a voice message the model labels voicemail; the person says it is support (it is a
# customer asking for help, left on the voicemail)
SUBJECT = "Voice Message from Robert Miller (5551234)"
BODY = ("You have a new voice message.\nCaller: Robert Miller 5551234\nMailbox: 201\n"
        "Duration: 00:00:23")


def start(service_process: Any, nats_server: Any, database_url: str,
          **extra: str) -> tuple[Any, int]:
    port = free_port()
    service = service_process(
        ["postroom-classifier"], name="classifier",
        env={"NATS_URL": nats_server.url, "HTTP_PORT": str(port), "BLOB_BACKEND": "nats",
             "DATABASE_URL": database_url, "CONSUMER_BACKOFF_BASE_SECONDS": "0.1",
             "LOG_LEVEL": "INFO", **extra},
        ready_url=f"http://127.0.0.1:{port}/health/ready")
    return service, port


async def stored_corrections(url: str) -> list[dict[str, Any]]:
    store = Store(url)
    try:
        async with store.sessions() as session:
            rows = (await session.execute(registry.corrections.select())).all()
        return [dict(r._mapping) for r in rows]
    finally:
        await store.close()


async def test_corrections_are_stored_latest_wins_redelivery_changes_nothing(
        bus: Bus, service_process: Any, nats_server: Any, database_url: str) -> None:
    service, port = start(service_process, nats_server, database_url)
    await service.astart()
    routed = await bus.parsed(SUBJECT, BODY, "Auto-Submitted: auto-generated\r\n",
                              [("Msg0001.WAV", "audio/wav")], None)
    first = MailClassified.model_validate(await bus.wait_for("mail.classified",
                                                             routed.mail_key))
    correction = await bus.correct(routed, "support", previous=first.classification,
                                   by="alice")
    async def stored() -> bool:
        return len(await stored_corrections(database_url)) == 1
    await until(stored, "the correction is not stored")
    [row] = await stored_corrections(database_url)
    assert (row["tenant"], row["mail_key"], row["label"], row["previous_label"],
            row["corrected_by"], row["correction_id"], row["email_id"]) == (
        "acme", routed.mail_key, "support", first.classification, "alice",
        correction.correction_id, routed.message_id)
    mail = row["features"]  # the model input of the raw mail: training needs no blob store
    assert mail["subject"] == SUBJECT and "Robert Miller" in mail["body"]
    assert mail["headers"] == {"auto-submitted": "auto-generated"}
    assert mail["dmarc"] == "none"
    # what the raw mail does not tell comes from the mail's classification (mail.parsed)
    assert mail["attachments"] == ["audio/wav"] and mail["routed"] is False

    # redelivered (another message id): processed once
    await bus.publish(correction, msg_id="again-1")
    await until(lambda: consumer_idle(bus, DURABLE), "corrections consumer still busy")
    # a later correction of the same mail replaces it; an older one arriving late does not
    newer = await bus.correct(routed, "order", previous="support", by="bob")
    await until(lambda: consumer_idle(bus, DURABLE), "corrections consumer still busy")
    older = MailLabelCorrected(
        event_id=derive_event_id("old", "mail.label_corrected"), tenant="acme",
        mail_key=routed.mail_key, correction_id="old", email_id=routed.message_id,
        label="spam", corrected_by="carol", raw=routed.raw,
        occurred_at=correction.occurred_at - timedelta(minutes=5))
    await bus.publish(older)
    # raw mail unknown to the console: kept (it happened), without input (nothing to learn)
    other = await bus.parsed("Lunch?", "Are you free for lunch tomorrow?", "", [], None)
    await bus.correct(other, "meeting", by="alice", with_raw=False)
    await until(lambda: consumer_idle(bus, DURABLE), "corrections consumer still busy")

    rows = {r["mail_key"]: r for r in await stored_corrections(database_url)}
    assert len(rows) == 2
    assert (rows[routed.mail_key]["label"], rows[routed.mail_key]["correction_id"],
            rows[routed.mail_key]["corrected_by"]) == ("order", newer.correction_id, "bob")
    assert rows[other.mail_key]["label"] == "meeting"
    assert rows[other.mail_key]["features"] is None

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        listed = (await http.get("/corrections", params={"tenant": "acme"})).json()
        metrics = (await http.get("/metrics")).text
    assert {r["mail_key"]: r["label"] for r in listed} == {routed.mail_key: "order",
                                                           other.mail_key: "meeting"}
    assert all("features" not in r for r in listed)
    assert 'postroom_classifier_corrections_total{label="support"} 1.0' in metrics
    assert 'postroom_classifier_corrections_total{label="order"} 1.0' in metrics
    assert 'postroom_classifier_corrections_total{label="spam"}' not in metrics
    assert "postroom_classifier_corrections_without_input_total 1.0" in metrics
    assert "older correction ignored" in service.log_text()


async def classified_again(bus: Bus, mail: Any) -> MailClassified:
    again = await bus.parsed(SUBJECT, BODY, "Auto-Submitted: auto-generated\r\n",
                             [("Msg0001.WAV", "audio/wav")], None, key=mail.mail_key)
    return MailClassified.model_validate(await bus.wait_for(
        "mail.classified", mail.mail_key, causation_id=again.event_id))


async def wait_model(http: httpx.AsyncClient, not_version: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def changed() -> bool:
        found.update((await http.get("/model")).json())
        return found["model_version"] != not_version
    await until(changed, "the service still uses the old model", within=STARTUP_SECONDS)
    return found


async def test_correct_train_and_the_service_takes_the_new_version(
        bus: Bus, service_process: Any, nats_server: Any, database_url: str) -> None:
    url = database_url
    service, port = start(service_process, nats_server, url,
                          CLASSIFIER_MODEL_POLL_SECONDS="0.5")
    await service.astart()
    mail = await bus.parsed(SUBJECT, BODY, "Auto-Submitted: auto-generated\r\n",
                            [("Msg0001.WAV", "audio/wav")], None)
    before = MailClassified.model_validate(await bus.wait_for("mail.classified",
                                                              mail.mail_key))
    assert before.classification == "voicemail"
    await bus.correct(mail, "support", previous="voicemail")
    await until(lambda: consumer_idle(bus, DURABLE), "corrections consumer still busy")

    train = await asyncio.to_thread(
        subprocess.run, [str(Path(sys.executable).parent / "postroom"), "classifier", "train",
                         "--corrections-from", url],
        cwd=ROOT, capture_output=True, text=True, timeout=STARTUP_SECONDS)
    assert train.returncode == 0, train.stderr
    assert "1 corrections from" in train.stdout and "macro-F1" in train.stdout

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        model = await wait_model(http, before.model_version)
        [version] = (await http.get("/models")).json()
        metrics = (await http.get("/metrics")).text
    assert model["source"] == "store" and model["model_version"] == version["version"]
    assert version["version"].startswith("logreg-tfidf-") and "-00001-" in version["version"]
    assert version["corrections"] == 1 and version["training_mails"] == 2880
    assert version["metrics"]["macro_f1"] >= 0.85
    assert "postroom_classifier_model_swaps_total 1.0" in metrics
    assert f'postroom_classifier_model_info{{source="store",version="{version["version"]}"}} 1.0' \
        in metrics

    after = await classified_again(bus, mail)
    assert after.classification == "support", after.scores
    assert after.model_version == version["version"] != before.model_version
    evaluated = await asyncio.to_thread(
        subprocess.run, [str(Path(sys.executable).parent / "postroom"), "classifier",
                         "evaluate", "--store", url, "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=STARTUP_SECONDS)
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["model_version"] == version["version"]
    assert report["macro_f1"] == pytest.approx(version["metrics"]["macro_f1"])

    # a newer version that cannot be loaded (another scikit-learn's, say): reported once,
    # the service keeps the model it has
    store = Store(url)
    try:
        async with store.transaction() as session:
            await session.execute(registry.models.insert().values(
                version="logreg-tfidf-20991231-00002-broken0000", seq=2,
                created_at=datetime.now(UTC), corrections=0, training_mails=0,
                training_sha256="0" * 64, training_seconds=0, metrics=None,
                trained_by="test", model=b"not a model"))
    finally:
        await store.close()

    async def reported() -> bool:
        return "model version cannot be loaded" in service.log_text()
    await until(reported, "the broken version was not reported")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        async def polls() -> float:
            text = (await http.get("/metrics")).text
            return float(re.search(r"^postroom_classifier_model_polls_total (\S+)$", text,
                                   re.M).group(1))  # type: ignore[union-attr]
        seen = await polls()

        async def three_more_polls() -> bool:
            return await polls() >= seen + 3
        await until(three_more_polls, "the service stopped polling")
        assert service.log_text().count("model version cannot be loaded") == 1
        assert (await http.get("/model")).json()["model_version"] == version["version"]
        assert (await http.get("/health/ready")).status_code == 200


async def test_the_service_retrains_itself_after_a_correction(
        bus: Bus, service_process: Any, nats_server: Any, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/classifier.db"
    service, port = start(service_process, nats_server, url,
                          CLASSIFIER_RETRAIN_AFTER_CORRECTIONS="1",
                          CLASSIFIER_RETRAIN_DEBOUNCE_SECONDS="0.5")
    await service.astart()
    mail = await bus.parsed(SUBJECT, BODY, "Auto-Submitted: auto-generated\r\n",
                            [("Msg0001.WAV", "audio/wav")], None)
    before = MailClassified.model_validate(await bus.wait_for("mail.classified",
                                                              mail.mail_key))
    await bus.correct(mail, "support", previous=before.classification)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        model = await wait_model(http, before.model_version)
        versions = (await http.get("/models")).json()

        # the retraining counts itself once its own look at the store is done; the periodic
        # look may have swapped the new version in before that
        async def counted() -> str | None:
            text = (await http.get("/metrics")).text
            done = re.findall(r"^postroom_classifier_retrains_total\{.*\} (\S+)$", text, re.M)
            return text if any(float(n) for n in done) else None

        metrics = await until(counted, "the retraining counted")
    assert [v["version"] for v in versions] == [model["model_version"]]
    assert versions[0]["corrections"] == 1
    assert 'postroom_classifier_retrains_total{result="ok"} 1.0' in metrics
    after = await classified_again(bus, mail)
    assert (after.classification, after.model_version) == ("support", model["model_version"])


def test_train_refuses_a_store_without_tables(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    result = subprocess.run(
        [str(Path(sys.executable).parent / "postroom"), "classifier", "train",
         "--corrections-from", f"sqlite+aiosqlite:///{empty}", "--output",
         str(tmp_path / "m.joblib")], cwd=ROOT, capture_output=True, text=True,
        timeout=STARTUP_SECONDS)
    assert result.returncode == 1
    assert "cannot read corrections" in result.stderr and "has the classifier run" in \
        result.stderr
    assert not (tmp_path / "m.joblib").exists()
