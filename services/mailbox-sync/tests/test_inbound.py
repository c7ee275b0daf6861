"""The inbound-parse endpoint over real HTTP: signed raw MIME becomes mail.received once;
bad or stale signatures and wrong requests are RFC 9457 problems."""

from __future__ import annotations

import time

import httpx
from mailbox_sync_testkit import Harness, mail

from postroom_mailbox_sync.handlers import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

SECRET = "acme-support-inbound-secret"


def signed(body: bytes, *, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    timestamp = str(int(at if at is not None else time.time()))
    return {"Content-Type": "message/rfc822", TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(secret, timestamp, body)}


async def post(harness: Harness, body: bytes, headers: dict[str, str],
               path: str = "/api/v1/inbound/acme/support") -> httpx.Response:
    assert harness.runtime is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{harness.runtime.http_port}",
                                 trust_env=False, timeout=10) as client:
        return await client.post(path, content=body, headers=headers)


async def test_signed_upload_is_published_once(harness: Harness) -> None:
    await harness.start(mailbox_sync_inbound_secrets=f"acme/support={SECRET}")
    raw = mail(subject="Uploaded question")
    first = await post(harness, raw, signed(raw))
    assert first.status_code == 202, first.text
    again = await post(harness, raw, signed(raw))  # a retried upload: the same mail
    assert again.status_code == 202
    assert again.json() == {**first.json(), "duplicate": True}
    assert first.json()["duplicate"] is False
    await harness.wait_received(1)
    await harness.published_all()
    [event] = await harness.received()
    assert event["source"] == "webhook" and event["mailbox"] == "support"
    assert event["mail_key"] == first.json()["mail_key"]
    assert event["subject"] == "Uploaded question"


async def test_bad_and_stale_signatures_are_refused_as_problems(harness: Harness) -> None:
    await harness.start(mailbox_sync_inbound_secrets=f"acme={SECRET}")
    raw = mail()
    wrong = await post(harness, raw, signed(raw, secret="not-the-secret-at-all"))
    assert wrong.status_code == 401
    assert wrong.headers["content-type"] == "application/problem+json"
    assert wrong.json()["detail"] == "signature does not match"
    stale = await post(harness, raw, signed(raw, at=time.time() - 3600))
    assert stale.status_code == 401 and "replay" in stale.json()["detail"]
    tampered_headers = signed(raw)
    tampered = await post(harness, raw + b"extra", tampered_headers)
    assert tampered.status_code == 401
    unknown = await post(harness, raw, signed(raw), path="/api/v1/inbound/globex/support")
    assert unknown.status_code == 404
    no_route = await post(harness, raw, signed(raw), path="/api/v1/inbound/acme/nosuchbox")
    assert no_route.status_code == 404 and "nosuchbox" in no_route.json()["detail"]
    not_mime = await post(harness, b"{}", {**signed(b"{}"), "Content-Type": "application/json"})
    assert not_mime.status_code == 415
    await harness.published_all()
    assert await harness.received() == []


async def test_oversized_upload_is_refused_without_content_length(harness: Harness) -> None:
    await harness.start(mailbox_sync_inbound_secrets=f"acme={SECRET}",
                        mailbox_sync_inbound_max_bytes=10_000)
    raw = mail(body="x" * 20_000)

    async def chunked() -> object:  # no Content-Length: the server counts as it reads
        for start in range(0, len(raw), 4096):
            yield raw[start:start + 4096]

    assert harness.runtime is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{harness.runtime.http_port}",
                                 trust_env=False, timeout=10) as client:
        response = await client.post("/api/v1/inbound/acme/support", content=chunked(),
                                     headers=signed(raw))
    assert response.status_code == 413
    await harness.published_all()
    assert await harness.received() == []
