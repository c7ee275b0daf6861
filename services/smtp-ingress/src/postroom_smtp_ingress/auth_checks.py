"""The checks of mail authentication that ask DNS about the sender: SPF (pyspf), DKIM and ARC
(dkimpy) and iprev, each a function of one check's :class:`~.dns_lookups.Lookups` and the mail.

What this adds to the libraries:

- every DNS question goes through :mod:`.dns_lookups` (configured servers, a deadline per
  check, ``temperror`` on timeout or SERVFAIL): pyspf reads DNS through its module-level
  ``spf.DNSLookup``, which is pointed at the current check's lookups (a context variable, so
  concurrent checks in other threads keep their own);
- one verdict per DKIM signature (dkimpy verifies one index at a time) with ``temperror``,
  ``permerror`` and ``fail`` told apart (dkimpy answers False for all three).
"""

from __future__ import annotations

import contextvars
import ipaddress
import logging
import re
from dataclasses import dataclass
from typing import Any

import dkim
import dkim.util
import dns.name
import spf

from postroom_contracts import ArcVerdict, DkimVerdict, IprevVerdict, SpfVerdict

from .dns_lookups import DnsTempError, Lookups

log = logging.getLogger(__name__)

MAX_DKIM_SIGNATURES = 10  # RFC 6376 6.1: a verifier MAY limit the signatures it checks
MAX_PTR_NAMES = 10  # iprev: forward lookups per client address
REASON_LIMIT = 300

# dkimpy logs every failed signature at ERROR through its own logger; the verdicts carry it
LIBRARY_LOG = logging.getLogger("postroom_smtp_ingress.authentication.dkimpy")
LIBRARY_LOG.addHandler(logging.NullHandler())
LIBRARY_LOG.propagate = False

_DOMAIN = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}[A-Za-z0-9_])?"
                     r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}[A-Za-z0-9_])?)*\.?$")
_SPF_RESULTS = {"none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"}


@dataclass(frozen=True)
class SmtpFacts:
    """What the SMTP session knew; ``mail_from`` is '' for the null sender."""

    client_ip: str | None
    helo: str | None
    mail_from: str
    auth_user: str | None = None


def clean_reason(text: object) -> str:
    value = re.sub(r"[\x00-\x1f\x7f]+", " ", str(text)).strip()
    return value[:REASON_LIMIT]


def domain_of(address: str) -> str | None:
    if "@" not in address:
        return None
    return normal_domain(address.rpartition("@")[2])


def normal_domain(domain: str) -> str | None:
    """Lower-case A-label form without the final dot; None if it is no domain name."""
    text = domain.strip().strip(".").lower()
    if not text:
        return None
    try:
        name = dns.name.from_text(text).to_text(omit_final_dot=True).lower()
    except Exception:
        return None
    return name if _DOMAIN.match(name) else None


def client_address(ip: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket's view of an IPv4 client
    return address


# --- pyspf's DNS ---------------------------------------------------------------------------

_spf_lookups: contextvars.ContextVar[Lookups | None] = contextvars.ContextVar(
    "spf_lookups", default=None)
_library_lookup = spf.DNSLookup


def _spf_dns_lookup(name: str, qtype: str, strict: Any = True, timeout: Any = None) -> list[Any]:
    """pyspf's DNSLookup contract (``((name, type), value)`` pairs), answered by the current
    check's lookups; outside a check, pyspf's own."""
    lookups = _spf_lookups.get()
    if lookups is None:
        return list(_library_lookup(name, qtype, strict, timeout))
    try:
        records = lookups.records(name, qtype)
    except DnsTempError as exc:
        raise spf.TempError(str(exc)) from None
    out: list[Any] = []
    for rdata in records:  # as pyspf's DNSLookup_dnspython
        if qtype in ("A", "AAAA"):
            out.append(((name, qtype), rdata.address))
        elif qtype == "MX":
            out.append(((name, qtype), (rdata.preference, rdata.exchange)))
        elif qtype == "PTR":
            out.append(((name, qtype), rdata.target.to_text(True)))
        elif qtype in ("TXT", "SPF"):
            out.append(((name, qtype), rdata.strings))
    return out


spf.DNSLookup = _spf_dns_lookup


# --- SPF -----------------------------------------------------------------------------------


def check_spf(lookups: Lookups, facts: SmtpFacts) -> SpfVerdict | None:
    """RFC 7208 check_host() of the MAIL FROM domain; of the HELO name for the null sender."""
    address = client_address(facts.client_ip)
    if address is None:
        return None
    helo = (facts.helo or "").strip()
    helo_domain = normal_domain(helo) if helo and not helo.startswith("[") else None
    mail_from = facts.mail_from.strip()
    if mail_from:
        identity, domain = "mailfrom", domain_of(mail_from)
    else:
        identity, domain = "helo", helo_domain
    base: dict[str, Any] = {
        "identity": identity, "domain": domain,
        "smtp_mailfrom": domain_of(mail_from) if mail_from else None,
        "smtp_helo": helo_domain or (helo[:255] or None),
    }
    if domain is None:
        what = "MAIL FROM" if mail_from else "HELO name"
        return SpfVerdict(result="none", reason=f"no domain in the {what} to check", **base)
    sender = mail_from if mail_from else f"postmaster@{domain}"
    token = _spf_lookups.set(lookups)
    try:
        query = spf.query(i=str(address), s=sender, h=helo or domain, strict=True)
        result, _code, explanation = query.check()
    except Exception as exc:  # the library failed on this input: never a stuck consumer
        log.warning("SPF check failed", extra={"error": f"{type(exc).__name__}: {exc}"})
        result, explanation = "temperror", f"SPF check failed: {type(exc).__name__}"
    finally:
        _spf_lookups.reset(token)
    result = str(result).lower()
    if result not in _SPF_RESULTS:  # pyspf's 'ambiguous' and the like under strict checks
        result = "permerror"
    return SpfVerdict(result=result, reason=clean_reason(explanation) or None, **base)


# --- DKIM ----------------------------------------------------------------------------------


class _KeyLookup:
    """dkimpy's ``dnsfunc``: a key record by name; remembers why a key was not there."""

    def __init__(self, lookups: Lookups) -> None:
        self.lookups = lookups
        self.temperror: str | None = None
        self.missing = False

    def __call__(self, name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        try:
            records = self.lookups.txt(text)
        except DnsTempError as exc:
            self.temperror = str(exc)
            raise dkim.DnsTimeoutError(str(exc)) from None
        if not records:
            self.missing = True
            return None
        return records[0]


def _signature_tags(value: bytes) -> dict[bytes, bytes]:
    try:
        return dict(dkim.util.parse_tag_value(value))
    except Exception:
        return {}


def _tag(tags: dict[bytes, bytes], name: bytes, limit: int = 255) -> str | None:
    value = tags.get(name)
    if value is None:
        return None
    text = re.sub(r"\s+", "", value.decode("ascii", "replace"))
    return text[:limit] or None


def check_dkim(lookups: Lookups, raw: bytes) -> list[DkimVerdict]:
    """One verdict per DKIM-Signature (at most ``MAX_DKIM_SIGNATURES``), topmost first."""
    try:
        message = dkim.DKIM(raw, logger=LIBRARY_LOG)
    except Exception as exc:
        return [DkimVerdict(result="permerror", domain=None, selector=None,
                            reason=clean_reason(f"message cannot be parsed: {exc}"))]
    signatures = [value for name, value in message.headers if name.lower() == b"dkim-signature"]
    return [_verify_signature(message, index, value, lookups)
            for index, value in enumerate(signatures[:MAX_DKIM_SIGNATURES])]


def _verify_signature(message: dkim.DKIM, index: int, value: bytes,
                      lookups: Lookups) -> DkimVerdict:
    tags = _signature_tags(value)
    domain = tags.get(b"d")
    described: dict[str, Any] = {
        "domain": normal_domain(domain.decode("ascii", "replace")) if domain else None,
        "selector": _tag(tags, b"s", 63),
        "algorithm": _tag(tags, b"a", 32),
        "signature_prefix": _tag(tags, b"b", 8),
    }
    key = _KeyLookup(lookups)
    message.pk = None
    try:
        prepared = message.verify_headerprep(index)
    except Exception as exc:  # missing or malformed tags, expired, unknown algorithm
        return DkimVerdict(result="permerror", reason=clean_reason(exc), **described)
    if not prepared:
        return DkimVerdict(result="permerror", reason="signature not found", **described)
    sig, include_headers, headers = prepared
    try:
        valid = message.verify_sig(sig, include_headers, headers[index], key)
    except dkim.ValidationError as exc:  # e.g. the body hash does not match
        return DkimVerdict(result="fail", reason=clean_reason(exc), **described)
    except Exception as exc:  # key too small, unknown key type, bad encoding
        return DkimVerdict(result="permerror", reason=clean_reason(exc), **described)
    if valid:
        return DkimVerdict(result="pass", **described)
    if key.temperror is not None:
        return DkimVerdict(result="temperror", reason=clean_reason(key.temperror), **described)
    if key.missing:
        return DkimVerdict(result="permerror", reason="no key for signature", **described)
    if message.pk is None:
        return DkimVerdict(result="permerror", reason="invalid key record", **described)
    return DkimVerdict(result="fail", reason="signature did not verify", **described)


# --- ARC -----------------------------------------------------------------------------------


def check_arc(lookups: Lookups, raw: bytes) -> ArcVerdict | None:
    """RFC 8617 chain validation; None when the mail has no ARC set."""
    try:
        chain = dkim.ARC(raw, logger=LIBRARY_LOG)
        length, _ = chain.sorted_arc_headers()
    except Exception as exc:
        return ArcVerdict(result="fail", chain_length=0,
                          reason=clean_reason(f"ARC headers cannot be read: {exc}"))
    if not length:
        return None
    key = _KeyLookup(lookups)
    try:
        cv, _results, reason = chain.verify(dnsfunc=key)
    except Exception as exc:
        cv, reason = dkim.CV_Fail, f"{type(exc).__name__}: {exc}"
    if cv == dkim.CV_Pass:
        return ArcVerdict(result="pass", chain_length=length)
    if key.temperror is not None:
        reason = f"{reason}; {key.temperror}"
    return ArcVerdict(result="fail", chain_length=length, reason=clean_reason(reason))


# --- iprev ---------------------------------------------------------------------------------


def check_iprev(lookups: Lookups, ip: str | None) -> IprevVerdict | None:
    """RFC 8601 3: a PTR name of the client address that resolves back to it."""
    address = client_address(ip)
    if address is None:
        if not ip:
            return None
        return IprevVerdict(result="permerror", ip=ip[:64], reason="not an IP address")
    text = str(address)
    try:
        names = lookups.ptr(text)
    except DnsTempError as exc:
        return IprevVerdict(result="temperror", ip=text, reason=clean_reason(exc))
    if not names:
        return IprevVerdict(result="fail", ip=text, reason="no PTR record")
    temporary: str | None = None
    for name in names[:MAX_PTR_NAMES]:
        try:
            forward = lookups.addresses(name, address.version)
        except DnsTempError as exc:
            temporary = str(exc)
            continue
        if any(client_address(a) == address for a in forward):
            return IprevVerdict(result="pass", ip=text, hostname=normal_domain(name))
    if temporary is not None:
        return IprevVerdict(result="temperror", ip=text, reason=clean_reason(temporary))
    return IprevVerdict(result="fail", ip=text,
                        reason="no PTR name resolves back to the address")
