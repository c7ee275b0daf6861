"""The relay URL's security and credentials against a real aiosmtpd with a self-signed
certificate (STARTTLS, implicit TLS), and DKIM signatures that verify with dkimpy."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path

import dkim
import mailer_samples as samples
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from postroom_testing.smtp import Sink


@pytest.fixture
def ca(tmp_path: Path) -> tuple[trustme.CA, Path]:
    authority = trustme.CA()
    path = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return authority, path


def server_context(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    return context


async def test_starttls_with_credentials_in_the_url(start_mailer, ca):
    authority, ca_file = ca
    sink = Sink(starttls=server_context(authority), credentials=("relay-user", "s3cr:t")).start()
    try:
        url = f"smtp+starttls://relay-user:s3cr%3At@127.0.0.1:{sink.port}"
        mailer = await start_mailer(url, MAILER_RELAY_CA_FILE=str(ca_file))
        event = samples.request("fw-000101", kind="forward",
                                original=await mailer.put(samples.plain_mail()))
        await mailer.request(event)
        sent = await mailer.wait_event("delivery.sent", event.delivery_id)
        assert sent["attempts"] == 1
        assert sink.handler.auth == ["relay-user"] and len(sink.received) == 1
    finally:
        sink.stop()


async def test_smtps_with_credentials_from_the_environment(start_mailer, ca):
    authority, ca_file = ca
    sink = Sink(implicit_tls=server_context(authority), credentials=("u2", "p2")).start()
    try:
        mailer = await start_mailer(f"smtps://127.0.0.1:{sink.port}",
                                    MAILER_RELAY_CA_FILE=str(ca_file),
                                    MAILER_RELAY_USERNAME="u2", MAILER_RELAY_PASSWORD="p2")
        event = samples.request("fw-000102", kind="forward",
                                original=await mailer.put(samples.plain_mail()))
        await mailer.request(event)
        await mailer.wait_event("delivery.sent", event.delivery_id)
        assert sink.handler.auth == ["u2"] and len(sink.received) == 1
    finally:
        sink.stop()


async def test_untrusted_certificate_is_a_temporary_failure(start_mailer, ca):
    authority, _ = ca
    sink = Sink(starttls=server_context(authority)).start()
    try:
        mailer = await start_mailer(sink.url, MAILER_RETRY_SCHEDULE="0.2s")
        event = samples.request("fw-000103", kind="forward",
                                original=await mailer.put(samples.plain_mail()))
        await mailer.request(event)
        failed = await mailer.wait_event("delivery.failed", event.delivery_id)
        assert failed["permanent"] is False and "CERTIFICATE" in failed["error"].upper()
        assert sink.received == []
    finally:
        sink.stop()


async def test_dkim_signature_verifies_against_the_public_key(start_mailer, sink: Sink,
                                                              tmp_path: Path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    public = base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    mailer = await start_mailer(sink.url, MAILER_DKIM_DOMAIN="acme.example",
                                MAILER_DKIM_SELECTOR="mail", MAILER_DKIM_KEY_FILE=str(key_file))
    event = samples.request(
        "vm-000104", kind="voicemail", original=await mailer.put(samples.voicemail_mail()),
        template_data={"transcripts": [samples.transcript()]})
    await mailer.request(event)
    sent = await mailer.wait_event("delivery.sent", event.delivery_id)
    assert sent["dkim_signed"] is True
    data = sink.received[0].data

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"mail._domainkey.acme.example."
        return f"v=DKIM1; k=rsa; p={public}".encode()

    assert dkim.verify(data, dnsfunc=dns)
    assert data.count(b"DKIM-Signature:") == 1  # the PBX's signature was dropped
    tampered = data.replace(b"Please call me back", b"Please call me later")
    assert tampered != data and not dkim.verify(tampered, dnsfunc=dns)
