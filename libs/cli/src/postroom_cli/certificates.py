"""The embedded stack's self-signed SMTP certificate ("snakeoil", as Debian's Postfix has).

``postroom up`` offers STARTTLS out of the box: on the first start it generates a key and a
self-signed certificate in its data directory and reuses them on every later start (a client
that pinned the fingerprint keeps working). Senders that verify certificates will not trust
it; it encrypts the session, which opportunistic SMTP TLS is about. Bring your own certificate
with ``SMTP_TLS_CERT``/``SMTP_TLS_KEY`` (environment or ``--env-file``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

CERT_FILE = "smtp-snakeoil.pem"
KEY_FILE = "smtp-snakeoil.key"
VALID_DAYS = 3650  # as Debian's make-ssl-cert


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path
    sha256: str  # fingerprint, colon-separated upper-case hex (as `openssl x509 -fingerprint`)
    generated: bool  # created by this call (False: reused)


def fingerprint(cert: x509.Certificate) -> str:
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def file_fingerprint(path: Path) -> str | None:
    """The SHA-256 fingerprint of the (first) certificate in a PEM file; None if unreadable."""
    try:
        return fingerprint(x509.load_pem_x509_certificate(path.read_bytes()))
    except (OSError, ValueError):
        return None


def _usable(cert_path: Path, key_path: Path) -> x509.Certificate | None:
    """The certificate in ``cert_path`` if it and the key in ``key_path`` belong together and
    the certificate is still valid; None otherwise."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        return None
    if cert.not_valid_after_utc <= dt.datetime.now(dt.UTC) + dt.timedelta(days=1):
        return None
    return cert


def self_signed(folder: Path, hostname: str, addresses: tuple[str, ...] = ()) -> Certificate:
    """The snakeoil certificate in ``folder``: reused when present and usable, else generated
    (RSA 2048, SHA-256, ten years; names: ``hostname``, ``localhost`` and ``addresses``)."""
    cert_path, key_path = folder / CERT_FILE, folder / KEY_FILE
    existing = _usable(cert_path, key_path)
    if existing is not None:
        return Certificate(cert_path, key_path, fingerprint(existing), generated=False)

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64])])
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys((hostname,
                                                                             "localhost"))]
    for address in dict.fromkeys(("127.0.0.1", *addresses)):
        try:
            ip = ipaddress.ip_address(address)
            if not ip.is_unspecified:
                names.append(x509.IPAddress(ip))
        except ValueError:
            continue
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    # the key is readable by its owner only, from the moment it exists
    tmp_key = key_path.with_name(key_path.name + ".tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    tmp_cert = cert_path.with_name(cert_path.name + ".tmp")
    tmp_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp_key, key_path)
    os.replace(tmp_cert, cert_path)
    return Certificate(cert_path, key_path, fingerprint(cert), generated=True)
