"""DNS for mail authentication: one dnspython resolver per service, bounded per check.

Every lookup of SPF (pyspf), DKIM and ARC keys (dkimpy), DMARC records and iprev goes through
:class:`Lookups`, which asks the configured servers (``AUTH_DNS_SERVERS``, default the system
resolver) and never waits past its deadline: a lookup that cannot be answered in time, a
SERVFAIL or an unreachable server raises :class:`DnsTempError` (the verdict becomes
``temperror``) instead of holding a consumer. Answers are cached by their TTL (dnspython's
LRU cache, NXDOMAIN included); failures are cached for ``FAILURE_TTL_SECONDS`` per name and
type (RFC 9520). When a lookup times out, one probe (the root's NS, which any resolver answers
from memory) tells a slow domain from a resolver that answers nothing at all: in the second
case every lookup fails at once for ``DOWN_SECONDS`` (an offline machine, a dead resolver),
so an outage costs one timeout per ``DOWN_SECONDS``, not one per mail or per domain.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.query
import dns.rdatatype
import dns.resolver
import dns.reversename

FAILURE_TTL_SECONDS = 30.0
FAILURE_CACHE_SIZE = 10_000
ANSWER_CACHE_SIZE = 50_000
PER_TRY_TIMEOUT_SECONDS = 2.0  # one server, one try; retried until the deadline
DOWN_SECONDS = 30.0  # after the resolver answered not even the probe
PROBE_TIMEOUT_SECONDS = 1.0


class DnsTempError(Exception):
    """The question could not be answered now (timeout, SERVFAIL, no server reachable)."""


def parse_servers(value: str) -> tuple[tuple[str, int], ...]:
    """``AUTH_DNS_SERVERS``: ``ip``, ``ip:port``, ``[ipv6]:port`` or a bare IPv6, comma
    separated; empty means the system resolver."""
    servers: list[tuple[str, int]] = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        host, port = item, 53
        if item.startswith("["):
            host, sep, rest = item[1:].partition("]")
            if not sep or (rest and not rest.startswith(":")):
                raise ValueError(f"{item!r}: expected [ipv6]:port")
            if rest:
                port = _port(item, rest[1:])
        elif item.count(":") == 1:
            host, _, port_text = item.partition(":")
            port = _port(item, port_text)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{item!r}: a DNS server is an IP address (with an optional "
                             "port), not a name") from None
        servers.append((host, port))
    return tuple(servers)


def _port(item: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{item!r}: port must be 1-65535")
    return int(text)


class _FailureCache:
    """(name, type) -> (expiry, reason) for lookups that failed temporarily."""

    def __init__(self, ttl: float, size: int) -> None:
        self.ttl = ttl
        self.size = size
        self._entries: dict[tuple[str, int], tuple[float, str]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int]) -> str | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= time.monotonic():
                del self._entries[key]
                return None
            return entry[1]

    def put(self, key: tuple[str, int], reason: str) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.size:
                now = time.monotonic()
                self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
                if len(self._entries) >= self.size:
                    self._entries.pop(next(iter(self._entries)))
            self._entries[key] = (time.monotonic() + self.ttl, reason)


class Resolver:
    """The service's resolver: the configured servers, a TTL cache and a failure cache.

    Thread-safe: checks run in worker threads and share it."""

    def __init__(self, servers: Sequence[tuple[str, int]] = (), *,
                 failure_ttl: float = FAILURE_TTL_SECONDS) -> None:
        self.servers = tuple(servers)
        self.error: str | None = None
        self._resolver: dns.resolver.Resolver | None
        try:
            if self.servers:
                resolver = dns.resolver.Resolver(configure=False)
                resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port)
                                        for host, port in self.servers]
            else:
                resolver = dns.resolver.Resolver()  # /etc/resolv.conf
        except dns.resolver.NoResolverConfiguration as exc:
            # no usable system configuration: every lookup is a temporary error, at once
            self._resolver = None
            self.error = f"no DNS resolver configured: {exc}"
        else:
            resolver.cache = dns.resolver.LRUCache(ANSWER_CACHE_SIZE)
            resolver.timeout = PER_TRY_TIMEOUT_SECONDS
            self._resolver = resolver
        self._failures = _FailureCache(failure_ttl, FAILURE_CACHE_SIZE)
        self._down_until = 0.0
        self._probing = threading.Lock()

    def lookups(self, budget: float) -> Lookups:
        """A view whose lookups all end within ``budget`` seconds from now."""
        return Lookups(self, time.monotonic() + budget)

    def resolve(self, name: str, rdtype: int, deadline: float) -> list[Any]:
        """The records of the answer (after CNAMEs); [] for NXDOMAIN or no data."""
        key = (name.lower().rstrip("."), rdtype)
        failed = self._failures.get(key)
        if failed is not None:
            raise DnsTempError(f"{failed} (cached)")
        if self._resolver is None:
            raise DnsTempError(self.error or "no DNS resolver")
        if time.monotonic() < self._down_until:
            raise DnsTempError("DNS resolver not answering")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DnsTempError("DNS time budget spent")
        try:
            answer = self._resolver.resolve(
                dns.name.from_text(key[0]), rdtype, search=False, raise_on_no_answer=False,
                lifetime=remaining,
            )
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.Timeout:
            reason = f"DNS timeout ({dns.rdatatype.to_text(rdtype)} {key[0]})"
            if remaining >= PER_TRY_TIMEOUT_SECONDS:  # a full try went unanswered
                self._failures.put(key, reason)
                if not self._answers():
                    self._down_until = time.monotonic() + DOWN_SECONDS
                    reason = f"{reason}; DNS resolver not answering"
            raise DnsTempError(reason) from None
        except dns.resolver.NoNameservers:
            # every server answered SERVFAIL/REFUSED or could not be reached
            reason = f"DNS server failure ({dns.rdatatype.to_text(rdtype)} {key[0]})"
            self._failures.put(key, reason)
            raise DnsTempError(reason) from None
        except (dns.exception.DNSException, OSError) as exc:
            raise DnsTempError(f"DNS error: {type(exc).__name__}: {exc}") from None
        return list(answer.rrset) if answer.rrset is not None else []


    def _answers(self) -> bool:
        """Does any configured server answer at all (any response code)? Asked directly, past
        the cache; one probe at a time (a concurrent one counts as an answer)."""
        if not self._probing.acquire(blocking=False):
            return True
        try:
            assert self._resolver is not None
            query = dns.message.make_query(dns.name.root, dns.rdatatype.NS)
            for server in self._resolver.nameservers:
                if isinstance(server, str):
                    address, port = server, self._resolver.port
                else:
                    address, port = server.address, getattr(server, "port", 53)
                try:
                    dns.query.udp(query, address, timeout=PROBE_TIMEOUT_SECONDS, port=port)
                    return True
                except (dns.exception.DNSException, OSError, ValueError):
                    continue
            return False
        finally:
            self._probing.release()

    @property
    def down(self) -> bool:
        """The resolver answered nothing recently: lookups fail at once."""
        return time.monotonic() < self._down_until


@dataclass
class Lookups:
    """The lookups of one check, all bounded by one deadline (``time.monotonic()``)."""

    resolver: Resolver
    deadline: float

    def records(self, name: str, rdtype: str | int) -> list[Any]:
        code = dns.rdatatype.from_text(rdtype) if isinstance(rdtype, str) else rdtype
        return self.resolver.resolve(name, code, self.deadline)

    def txt(self, name: str) -> list[bytes]:
        """Each TXT record's strings joined (RFC 7208 3.3, RFC 6376 3.6.2.2)."""
        return [b"".join(r.strings) for r in self.records(name, dns.rdatatype.TXT)]

    def ptr(self, ip: str) -> list[str]:
        name = dns.reversename.from_address(ip).to_text()
        return [r.target.to_text(omit_final_dot=True) for r in self.records(name, "PTR")]

    def addresses(self, name: str, ip_version: int) -> list[str]:
        rdtype = dns.rdatatype.A if ip_version == 4 else dns.rdatatype.AAAA
        return [r.address for r in self.records(name, rdtype)]
