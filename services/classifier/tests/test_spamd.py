"""SpamAssassin through a real spamd: GTUBE comes out spam with spamd's score, an ordinary
order is left to the model with a low score, and a spamd that is gone (stopped, silent,
refusing) only costs the spam score: the mail is classified all the same, counted and
logged, and the service stays ready."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from classifier_harness import Bus, SpamdProcess

from postroom_classifier.spam import Spamd, SpamdAddress, SpamdUnavailable
from postroom_contracts import MailClassified
from postroom_testing.procs import free_port

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
ORDER_BODY = ("Dear sales team,\n\nplease find attached our purchase order PO-20931 for 40 "
              "office chairs, model Ergo 200. Requested delivery date: 12 January 2027 to our "
              "Lyon warehouse. Please confirm the order and the delivery date.\n\n"
              "Kind regards,\nStefan Keller\nPurchasing, Keller Bau GmbH")


def raw_mail(key: str, subject: str, body: str) -> bytes:
    return (f"Received: from mail.keller-bau.example (mail.keller-bau.example [192.0.2.10])\r\n"
            f"\tby mx.acme.example with ESMTPS; Tue, 01 Dec 2026 09:14:03 +0000\r\n"
            f"Date: Tue, 01 Dec 2026 09:14:00 +0000\r\n"
            f"From: Stefan Keller <s.keller@keller-bau.example>\r\n"
            f"To: sales@acme.example\r\nSubject: {subject}\r\n"
            f"Message-ID: <{key}@keller-bau.example>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()


def test_spamd_addresses() -> None:
    assert SpamdAddress.parse("spamd.mail:7830") == SpamdAddress("spamd.mail", 7830)
    assert SpamdAddress.parse("tcp://127.0.0.1") == SpamdAddress("127.0.0.1", 783)
    assert SpamdAddress.parse("unix:///run/spamd.sock").socket_path is not None
    with pytest.raises(ValueError):
        SpamdAddress.parse("http://spamd:783")


async def test_a_silent_or_absent_spamd_is_a_bounded_failure() -> None:
    release = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()  # accepts, never answers, never closes: only the client ends it
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        # the bound is the client's own time limit (0.5 s), not a clock read here: without
        # one, the check would run into the 60 s guard and fail
        async with asyncio.timeout(60):
            with pytest.raises(SpamdUnavailable) as caught:
                await Spamd(SpamdAddress("127.0.0.1", port), timeout=0.5).check(
                    b"Subject: x\r\n\r\nx")
        assert caught.value.reason == "timeout"
        assert str(caught.value) == "no answer within 0.5 s"
    finally:
        release.set()
        server.close()
    with pytest.raises(SpamdUnavailable) as caught:
        await Spamd(SpamdAddress("127.0.0.1", free_port()), timeout=2).check(b"x")
    assert caught.value.reason == "unreachable"


@pytest.fixture
async def classifier(bus: Bus, service_process: Any, nats_server: Any, spamd: SpamdProcess,
                     tmp_path: Any) -> AsyncIterator[tuple[Any, int]]:
    port = free_port()
    service = service_process(
        ["postroom-classifier"], name="classifier",
        env={"NATS_URL": nats_server.url, "HTTP_PORT": str(port), "BLOB_BACKEND": "nats",
             "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/classifier.db",
             "CLASSIFIER_SPAMD_URL": f"127.0.0.1:{spamd.port}",
             # generous: the first check of a fresh spamd child takes longer on a busy machine
             "CLASSIFIER_SPAMD_TIMEOUT_SECONDS": "30",
             "CLASSIFIER_SPAMD_MAX_BYTES": "20000",
             "CONSUMER_BACKOFF_BASE_SECONDS": "0.1", "LOG_LEVEL": "INFO"},
        ready_url=f"http://127.0.0.1:{port}/health/ready")
    await service.astart()
    yield service, port


async def test_gtube_is_spam_an_order_is_not_and_a_stopped_spamd_costs_only_the_score(
        bus: Bus, classifier: tuple[Any, int], spamd: SpamdProcess) -> None:
    service, port = classifier
    gtube = await bus.parsed("Quarterly figures", f"Hello,\n\n{GTUBE}\n\nBest", "", [], None,
                             raw=raw_mail("gtube1", "Quarterly figures",
                                          f"Hello,\n\n{GTUBE}\n\nBest"))
    spam = MailClassified.model_validate(await bus.wait_for("mail.classified", gtube.mail_key))
    assert spam.classification == "spam", spam.scores
    assert spam.spam_score is not None and spam.spam_score >= 999, spam.spam_score
    assert spam.confidence == spam.scores["spam"] == 1.0
    assert abs(sum(spam.scores.values()) - 1) < 1e-3

    order = await bus.parsed("Purchase order PO-20931", ORDER_BODY, "",
                             [("PO-20931.pdf", "application/pdf")], None,
                             raw=raw_mail("order1", "Purchase order PO-20931", ORDER_BODY))
    ok = MailClassified.model_validate(await bus.wait_for("mail.classified", order.mail_key))
    assert ok.classification == "order", ok.scores
    assert ok.spam_score is not None and ok.spam_score < 3.0, ok.spam_score
    assert ok.confidence == ok.scores["order"] == max(ok.scores.values())

    # larger than CLASSIFIER_SPAMD_MAX_BYTES: not sent (as spamc does), classified anyway
    long_body = ORDER_BODY + "\n\n" + "Terms and conditions of purchase apply. " * 600
    big = await bus.parsed("Purchase order PO-20933", long_body, "",
                           [("PO-20933.pdf", "application/pdf")], None,
                           raw=raw_mail("order3", "Purchase order PO-20933", long_body))
    large = MailClassified.model_validate(await bus.wait_for("mail.classified", big.mail_key))
    assert large.spam_score is None and large.classification == "order", large.scores

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        rows = {r["mail_key"]: r for r in
                (await http.get("/classifications", params={"tenant": "acme"})).json()}
        assert rows[gtube.mail_key]["spam_score"] == spam.spam_score
        assert rows[order.mail_key]["spam_score"] == ok.spam_score

        spamd.stop(timeout=15)
        later = await bus.parsed("Purchase order PO-20932", ORDER_BODY, "",
                                 [("PO-20932.pdf", "application/pdf")], None,
                                 raw=raw_mail("order2", "Purchase order PO-20932", ORDER_BODY))
        down = MailClassified.model_validate(
            await bus.wait_for("mail.classified", later.mail_key))
        assert down.classification == "order" and down.spam_score is None
        assert (await http.get("/health/ready")).status_code == 200
        metrics = (await http.get("/metrics")).text
        model = (await http.get("/model")).json()
    assert 'postroom_classifier_spamd_checks_total{result="ok"} 2.0' in metrics
    assert 'postroom_classifier_spamd_checks_total{result="unreachable"} 1.0' in metrics
    assert 'postroom_classifier_spamd_checks_total{result="too_large"} 1.0' in metrics
    assert "postroom_classifier_spamd_seconds_count 2.0" in metrics
    assert model["spamd"] == f"127.0.0.1:{spamd.port}"
    log = service.log_text()
    assert "spamd check failed; classifying without it" in log and later.mail_key in log
