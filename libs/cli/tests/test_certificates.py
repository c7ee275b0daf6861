"""The embedded stack's self-signed SMTP certificate: generated once, reused, replaced when
unusable; what `postroom up` hands to smtp-ingress."""

from __future__ import annotations

import ipaddress
import ssl
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from postroom_cli.certificates import CERT_FILE, KEY_FILE, file_fingerprint, self_signed
from postroom_cli.services import BY_NAME
from postroom_cli.stack import StackConfig, service_env


def test_generated_once_then_reused(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    first = self_signed(folder, "mx.postroom.test", ("192.0.2.25", "0.0.0.0", "not-an-ip"))
    assert first.generated
    assert (first.cert, first.key) == (folder / CERT_FILE, folder / KEY_FILE)
    assert stat.S_IMODE(first.key.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(first.cert.read_bytes())
    assert first.sha256 == ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))
    assert file_fingerprint(first.cert) == first.sha256
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["mx.postroom.test", "localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("192.0.2.25")]
    # a TLS server can load it
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(first.cert, first.key)

    again = self_signed(folder, "another.name", ())
    assert not again.generated
    assert again.sha256 == first.sha256  # a client that pinned it keeps working
    assert sorted(f.name for f in folder.iterdir()) == sorted([CERT_FILE, KEY_FILE])  # no .tmp


def test_replaced_when_unusable(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    first = self_signed(folder, "postroom.local")
    first.key.write_bytes(b"not a key")
    second = self_signed(folder, "postroom.local")
    assert second.generated and second.sha256 != first.sha256
    # a key that does not belong to the certificate
    other = self_signed(tmp_path / "other", "postroom.local")
    second.key.write_bytes(other.key.read_bytes())
    third = self_signed(folder, "postroom.local")
    assert third.generated and third.sha256 not in (first.sha256, second.sha256)
    assert file_fingerprint(tmp_path / "missing.pem") is None


def test_the_certificate_goes_to_the_smtp_service_only(tmp_path: Path) -> None:
    tls = self_signed(tmp_path / "tls", "postroom.local")
    cfg = StackConfig(data_dir=tmp_path / "data")
    ingress = service_env(BY_NAME["smtp-ingress"], cfg, {}, tls)
    assert (ingress["SMTP_TLS_CERT"], ingress["SMTP_TLS_KEY"]) == (str(tls.cert), str(tls.key))
    extractor = service_env(BY_NAME["attachment-extractor"], cfg, {}, tls)
    assert "SMTP_TLS_CERT" not in extractor
    # the user's own certificate wins over the stack's
    own = service_env(BY_NAME["smtp-ingress"], cfg,
                      {"SMTP_TLS_CERT": "/etc/mine.pem", "SMTP_TLS_KEY": "/etc/mine.key"}, tls)
    assert (own["SMTP_TLS_CERT"], own["SMTP_TLS_KEY"]) == ("/etc/mine.pem", "/etc/mine.key")
