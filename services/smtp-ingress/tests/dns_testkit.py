"""A real DNS server for the authentication tests (dnslib, UDP and TCP on one free port of
127.0.0.1, in this process) and the mails they verify: DKIM keys generated here, mails signed
with dkimpy, ARC sets sealed with dkimpy.

Behaviours per subtree: ``servfail`` answers SERVFAIL, ``silent`` never answers (until the
server stops), ``gated`` answers only once ``gate`` is set; ``all_silent`` answers nothing at
all. Every question is recorded.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dnslib import AAAA, PTR, QTYPE, RCODE, RR, TXT, A, DNSError, DNSRecord
from dnslib.server import BaseResolver, DNSServer

TTL = 60


def _under(name: str, domains: Iterable[str]) -> bool:
    return any(name == d or name.endswith("." + d) for d in domains)


class _Quiet:
    def __getattr__(self, _name: str) -> object:
        return lambda *args, **kwargs: None


class TestDns(BaseResolver):  # type: ignore[misc]
    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[RR]] = {}
        self.servfail: set[str] = set()
        self.silent: set[str] = set()
        self.all_silent = False  # answer nothing at all (a dead resolver)
        self.gated: set[str] = set()
        self.gate = threading.Event()
        self.stopping = threading.Event()
        self.queries: list[tuple[str, str]] = []
        self.answered: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._servers: list[DNSServer] = []
        self.port = 0

    # --- zone ----------------------------------------------------------------------------

    def _add(self, name: str, qtype: str, rdata: object) -> None:
        name = name.lower().rstrip(".")
        self.records.setdefault((name, qtype), []).append(
            RR(name + ".", getattr(QTYPE, qtype), rdata=rdata, ttl=TTL))

    def txt(self, name: str, value: str) -> None:
        data = value.encode()
        chunks = [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]
        self._add(name, "TXT", TXT(chunks))

    def a(self, name: str, address: str) -> None:
        self._add(name, "AAAA" if ":" in address else "A",
                  AAAA(address) if ":" in address else A(address))

    def ptr(self, address: str, name: str) -> None:
        from ipaddress import ip_address

        self._add(ip_address(address).reverse_pointer, "PTR", PTR(name + "."))

    def dkim_key(self, selector: str, domain: str, key: DkimKey) -> None:
        self.txt(f"{selector}._domainkey.{domain}", key.record)

    # --- what it was asked -----------------------------------------------------------------

    def asked(self, name: str) -> int:
        name = name.lower().rstrip(".")
        with self._lock:
            return sum(1 for q, _ in self.queries if q == name)

    def asked_under(self, domain: str) -> int:
        with self._lock:
            return sum(1 for q, _ in self.queries if _under(q, [domain]))

    # --- the server --------------------------------------------------------------------------

    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
        name = str(request.q.qname).lower().rstrip(".")
        qtype = QTYPE[request.q.qtype]
        with self._lock:
            self.queries.append((name, qtype))
        if self.all_silent or _under(name, self.silent):
            self.stopping.wait(600)
            raise DNSError("no answer")  # dnslib sends nothing
        if _under(name, self.gated):
            while not self.gate.wait(0.05):
                if self.stopping.is_set():
                    raise DNSError("no answer")
        reply = request.reply()
        if _under(name, self.servfail):
            reply.header.rcode = RCODE.SERVFAIL
        elif (name, qtype) in self.records:
            for rr in self.records[(name, qtype)]:
                reply.add_answer(rr)
        elif not any(n == name for n, _ in self.records):
            reply.header.rcode = RCODE.NXDOMAIN
        with self._lock:
            self.answered.append((name, qtype))
        return reply

    def start(self) -> None:
        for _ in range(20):
            udp = DNSServer(self, address="127.0.0.1", port=0, logger=_Quiet())
            port = udp.server.server_address[1]
            try:
                tcp = DNSServer(self, address="127.0.0.1", port=port, tcp=True,
                                logger=_Quiet())
            except OSError:
                udp.server.server_close()
                continue
            udp.start_thread()
            tcp.start_thread()
            self._servers = [udp, tcp]
            self.port = port
            return
        raise RuntimeError("no free port for the test DNS server")

    def stop(self) -> None:
        self.stopping.set()
        self.gate.set()
        for server in self._servers:
            server.stop()
            server.server.server_close()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


# --- keys and mails ------------------------------------------------------------------------


@dataclass(frozen=True)
class DkimKey:
    private_pem: bytes
    public_b64: str

    @property
    def record(self) -> str:
        return f"v=DKIM1; k=rsa; p={self.public_b64}"

    @classmethod
    def generate(cls, bits: int = 2048) -> DkimKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        private = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        return cls(private, base64.b64encode(public).decode())


SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id"]


def mail(from_: str = "Buyer <buyer@pass.example>", *, to: str = "orders+acme@intake.example.com",
         subject: str = "Purchase order 4711", message_id: str = "<po-4711@pass.example>",
         body: str = "Please find the order attached.\r\n", extra: str = "") -> bytes:
    return (
        f"From: {from_}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Date: Sat, 21 Nov 2026 10:00:00 +0000\r\nMessage-ID: {message_id}\r\n"
        f"{extra}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    ).encode()


def header_b(signed: bytes) -> str:
    """The header.b property value of the first signature: its first 8 characters of b=, as
    an RFC 8601 value (a quoted-string when it holds a '/', which is no token character)."""
    prefix = signed.split(b" b=", 1)[1][:8].decode()
    return prefix if "/" not in prefix else f'"{prefix}"'


def dkim_sign(message: bytes, key: DkimKey, domain: str, selector: str = "sel") -> bytes:
    """The message with a DKIM-Signature (relaxed/relaxed) prepended, as dkimpy signs it."""
    header = dkim.sign(message, selector.encode(), domain.encode(), key.private_pem,
                       canonicalize=(b"relaxed", b"relaxed"), include_headers=SIGNED_HEADERS)
    return header + message


def arc_seal(message: bytes, key: DkimKey, domain: str, srv_id: str,
             results: str, selector: str = "arc") -> bytes:
    """What a forwarder does: record its own Authentication-Results and seal an ARC set
    (dkimpy's ARC signer) over them."""
    with_results = f"Authentication-Results: {srv_id}; {results}\r\n".encode() + message
    headers = dkim.arc_sign(with_results, selector.encode(), domain.encode(), key.private_pem,
                            srv_id.encode(), include_headers=SIGNED_HEADERS)
    return b"".join(headers) + with_results


@dataclass
class Keys:
    """The keys of the test domains, generated once per session."""

    pass_: DkimKey = field(default_factory=DkimKey.generate)
    other: DkimKey = field(default_factory=DkimKey.generate)
    forwarder: DkimKey = field(default_factory=DkimKey.generate)


def standard_zone(dns: TestDns, keys: Keys) -> None:
    """The zones the tests share (documented in test_authentication.py)."""
    # SPF
    dns.txt("pass.example", "v=spf1 ip4:127.0.0.0/8 ip6:::1 -all")
    dns.txt("fail.example", "v=spf1 ip4:192.0.2.0/24 -all")
    dns.txt("softfail.example", "v=spf1 ip4:192.0.2.0/24 ~all")
    dns.a("none.example", "192.0.2.10")  # exists, publishes no SPF, DKIM key or DMARC
    dns.txt("news.pass.example", "v=spf1 ip4:127.0.0.0/8 -all")
    dns.txt("forwarder.example", "v=spf1 ip4:127.0.0.0/8 -all")
    dns.txt("mail.pass.example", "v=spf1 a -all")
    # DMARC
    dns.txt("_dmarc.pass.example", "v=DMARC1; p=reject; sp=quarantine")
    dns.txt("_dmarc.fail.example", "v=DMARC1; p=quarantine")
    dns.txt("_dmarc.softfail.example", "v=DMARC1; p=none")
    dns.txt("_dmarc.strict.example", "v=DMARC1; p=reject; aspf=s; adkim=s")
    dns.txt("strict.example", "v=spf1 ip4:127.0.0.0/8 -all")
    dns.txt("sub.strict.example", "v=spf1 ip4:127.0.0.0/8 -all")
    # DKIM keys
    dns.dkim_key("sel", "pass.example", keys.pass_)
    dns.dkim_key("sel", "strict.example", keys.pass_)
    dns.dkim_key("other", "pass.example", keys.other)
    dns.dkim_key("arc", "forwarder.example", keys.forwarder)
    # iprev: 127.0.0.1 <-> mail.pass.example; 192.0.2.7 -> liar.example, which denies it
    dns.ptr("127.0.0.1", "mail.pass.example")
    dns.a("mail.pass.example", "127.0.0.1")
    dns.ptr("192.0.2.7", "liar.example")
    dns.a("liar.example", "192.0.2.99")
    # trouble
    dns.servfail.add("temperror.example")
    dns.silent.add("silent.example")
    dns.gated.add("gated.example")


# --- fixtures: ``from dns_testkit import dns_fixture, keys_fixture`` in a test module ---


@pytest.fixture(name="keys", scope="session")
def keys_fixture() -> Keys:
    return Keys()


@pytest.fixture(name="dns")
def dns_fixture(keys: Keys) -> Iterator[TestDns]:
    """A DNS server on a free port of 127.0.0.1 serving :func:`standard_zone`."""
    server = TestDns()
    standard_zone(server, keys)
    server.start()
    yield server
    server.stop()
