"""Mail authentication: SPF, DKIM, DMARC, ARC and iprev verdicts of one mail, and the
``Authentication-Results`` header field (RFC 8601) that states them.

Input: the raw message and what the SMTP session knew (client IP, HELO, MAIL FROM). Output:
:class:`Verdicts`, the contract models of ``mail.authenticated``. The verification itself is
the well-kept libraries': pyspf (RFC 7208), dkimpy (RFC 6376 signatures and RFC 8617 ARC
chains), authheaders' DMARC record parsing and organizational domain (public suffix list) and
authres's header syntax. This module adds what they leave to the caller:

- every DNS question goes through :mod:`.dns_lookups` (configured servers, a deadline per
  check, ``temperror`` on timeout or SERVFAIL): pyspf reads DNS through its module-level
  ``spf.DNSLookup``, which is pointed at the current check's lookups (a context variable, so
  concurrent checks in other threads keep their own);
- one verdict per DKIM signature (dkimpy verifies one index at a time) with ``temperror``,
  ``permerror`` and ``fail`` told apart (dkimpy answers False for all three);
- DMARC alignment (RFC 7489 3.1) from the SPF and DKIM verdicts, with the policy that applies.

The checks of one mail run in worker threads, concurrently (the DMARC record is looked up while
SPF and DKIM run), so a resolver that never answers costs one budget per mail, not one per
lookup.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import ipaddress
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import getaddresses
from typing import Any

import dkim
import dkim.util
import dns.name
import spf
from authheaders import dmarc_lookup
from authres import (
    AuthenticationResultsHeader,
    DKIMAuthenticationResult,
    IPRevAuthenticationResult,
    SMTPAUTHAuthenticationResult,
    SPFAuthenticationResult,
)
from authres.arc import ARCAuthenticationResult
from authres.core import AuthenticationResultProperty
from authres.dmarc import DMARCAuthenticationResult

from postroom_contracts import ArcVerdict, DkimVerdict, DmarcVerdict, IprevVerdict, SpfVerdict

from .dns_lookups import DnsTempError, Lookups, Resolver

log = logging.getLogger(__name__)

MAX_DKIM_SIGNATURES = 10  # RFC 6376 6.1: a verifier MAY limit the signatures it checks
MAX_PTR_NAMES = 10  # iprev: forward lookups per client address
REASON_LIMIT = 300
HEADER_NAME = "Authentication-Results"

# dkimpy logs every failed signature at ERROR through its own logger; the verdicts carry it
_LIBRARY_LOG = logging.getLogger("postroom_smtp_ingress.authentication.dkimpy")
_LIBRARY_LOG.addHandler(logging.NullHandler())
_LIBRARY_LOG.propagate = False

_DOMAIN = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}[A-Za-z0-9_])?"
                     r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}[A-Za-z0-9_])?)*\.?$")
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9!#$%&'*+./=?^_`{|}~@-]{1,200}$")
_SPF_RESULTS = {"none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"}


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


# --- inputs and outputs --------------------------------------------------------------------


@dataclass(frozen=True)
class SmtpFacts:
    """What the SMTP session knew; ``mail_from`` is '' for the null sender."""

    client_ip: str | None
    helo: str | None
    mail_from: str
    auth_user: str | None = None


@dataclass(frozen=True)
class Verdicts:
    authserv_id: str
    spf: SpfVerdict | None
    dkim: list[DkimVerdict]
    dmarc: DmarcVerdict
    arc: ArcVerdict | None
    iprev: IprevVerdict | None
    authentication_results: str

    @property
    def header(self) -> bytes:
        """The header field to prepend to the message, CRLF-terminated."""
        return f"{HEADER_NAME}: {self.authentication_results}\r\n".encode()


def _reason(text: object) -> str:
    value = re.sub(r"[\x00-\x1f\x7f]+", " ", str(text)).strip()
    return value[:REASON_LIMIT]


def _domain_of(address: str) -> str | None:
    if "@" not in address:
        return None
    return _normal_domain(address.rpartition("@")[2])


def _normal_domain(domain: str) -> str | None:
    """Lower-case A-label form without the final dot; None if it is no domain name."""
    text = domain.strip().strip(".").lower()
    if not text:
        return None
    try:
        name = dns.name.from_text(text).to_text(omit_final_dot=True).lower()
    except Exception:
        return None
    return name if _DOMAIN.match(name) else None


def _client_address(ip: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket's view of an IPv4 client
    return address


# --- SPF -----------------------------------------------------------------------------------


def check_spf(lookups: Lookups, facts: SmtpFacts) -> SpfVerdict | None:
    """RFC 7208 check_host() of the MAIL FROM domain; of the HELO name for the null sender."""
    address = _client_address(facts.client_ip)
    if address is None:
        return None
    helo = (facts.helo or "").strip()
    helo_domain = _normal_domain(helo) if helo and not helo.startswith("[") else None
    mail_from = facts.mail_from.strip()
    if mail_from:
        identity, domain = "mailfrom", _domain_of(mail_from)
    else:
        identity, domain = "helo", helo_domain
    base: dict[str, Any] = {
        "identity": identity, "domain": domain,
        "smtp_mailfrom": _domain_of(mail_from) if mail_from else None,
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
    return SpfVerdict(result=result, reason=_reason(explanation) or None, **base)


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
        message = dkim.DKIM(raw, logger=_LIBRARY_LOG)
    except Exception as exc:
        return [DkimVerdict(result="permerror", domain=None, selector=None,
                            reason=_reason(f"message cannot be parsed: {exc}"))]
    signatures = [value for name, value in message.headers if name.lower() == b"dkim-signature"]
    return [_verify_signature(message, index, value, lookups)
            for index, value in enumerate(signatures[:MAX_DKIM_SIGNATURES])]


def _verify_signature(message: dkim.DKIM, index: int, value: bytes,
                      lookups: Lookups) -> DkimVerdict:
    tags = _signature_tags(value)
    domain = tags.get(b"d")
    described: dict[str, Any] = {
        "domain": _normal_domain(domain.decode("ascii", "replace")) if domain else None,
        "selector": _tag(tags, b"s", 63),
        "algorithm": _tag(tags, b"a", 32),
        "signature_prefix": _tag(tags, b"b", 8),
    }
    key = _KeyLookup(lookups)
    message.pk = None
    try:
        prepared = message.verify_headerprep(index)
    except Exception as exc:  # missing or malformed tags, expired, unknown algorithm
        return DkimVerdict(result="permerror", reason=_reason(exc), **described)
    if not prepared:
        return DkimVerdict(result="permerror", reason="signature not found", **described)
    sig, include_headers, headers = prepared
    try:
        valid = message.verify_sig(sig, include_headers, headers[index], key)
    except dkim.ValidationError as exc:  # e.g. the body hash does not match
        return DkimVerdict(result="fail", reason=_reason(exc), **described)
    except Exception as exc:  # key too small, unknown key type, bad encoding
        return DkimVerdict(result="permerror", reason=_reason(exc), **described)
    if valid:
        return DkimVerdict(result="pass", **described)
    if key.temperror is not None:
        return DkimVerdict(result="temperror", reason=_reason(key.temperror), **described)
    if key.missing:
        return DkimVerdict(result="permerror", reason="no key for signature", **described)
    if message.pk is None:
        return DkimVerdict(result="permerror", reason="invalid key record", **described)
    return DkimVerdict(result="fail", reason="signature did not verify", **described)


# --- ARC -----------------------------------------------------------------------------------


def check_arc(lookups: Lookups, raw: bytes) -> ArcVerdict | None:
    """RFC 8617 chain validation; None when the mail has no ARC set."""
    try:
        chain = dkim.ARC(raw, logger=_LIBRARY_LOG)
        length, _ = chain.sorted_arc_headers()
    except Exception as exc:
        return ArcVerdict(result="fail", chain_length=0,
                          reason=_reason(f"ARC headers cannot be read: {exc}"))
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
    return ArcVerdict(result="fail", chain_length=length, reason=_reason(reason))


# --- DMARC ---------------------------------------------------------------------------------


@functools.cache
def _public_suffixes() -> Any:
    """authheaders' copy of the public suffix list, parsed once (authheaders' own
    get_org_domain parses the file on every call)."""
    import importlib.resources

    from publicsuffix2 import PublicSuffixList

    ref = importlib.resources.files("authheaders") / "public_suffix_list.txt"
    with importlib.resources.as_file(ref) as path, open(path, encoding="utf-8") as fh:
        return PublicSuffixList(fh)


def organizational_domain(domain: str) -> str:
    """RFC 7489 3.2: the public suffix plus one label. A name under no listed suffix has its
    last label as the suffix (the list's implicit ``*`` rule): ``pass.example`` is its own
    organizational domain (publicsuffix2's get_public_suffix would say ``example``)."""
    domain = domain.lower().rstrip(".")
    suffix = _public_suffixes().get_tld(domain) or domain.rpartition(".")[2]
    labels = domain.split(".")
    keep = len(suffix.split(".")) + 1
    return ".".join(labels[-keep:]) if len(labels) >= keep else domain


def aligned(domain: str | None, header_from: str, strict: bool) -> bool:
    if not domain:
        return False
    domain = domain.lower().rstrip(".")
    if strict:
        return domain == header_from
    return organizational_domain(domain) == organizational_domain(header_from)


@dataclass(frozen=True)
class DmarcPolicy:
    """The outcome of DMARC policy discovery (RFC 7489 6.6.3) for one mail."""

    header_from: str | None
    record: dict[str, str] | None = None
    policy_domain: str | None = None
    subdomain: bool = False  # the record is the organizational domain's: sp= applies
    permerror: str | None = None
    temperror: str | None = None


def header_from_domain(raw: bytes) -> tuple[str | None, str | None]:
    """(domain of the RFC5322.From, or None with the reason it has none usable)."""
    end = raw.find(b"\r\n\r\n")
    head = raw if end < 0 else raw[: end + 2]
    try:
        headers, _ = dkim.rfc822_parse(head + b"\r\n")
    except Exception as exc:
        return None, _reason(f"header cannot be parsed: {exc}")
    values = [v for name, v in headers if name.strip().lower() == b"from"]
    if not values:
        return None, "no From header field"
    if len(values) > 1:
        return None, "more than one From header field"
    text = values[0].decode("utf-8", "replace").replace("\r\n", "")
    domains = {_domain_of(addr) for _, addr in getaddresses([text]) if addr}
    if len(domains) != 1 or None in domains:
        return None, "the From header field does not name exactly one domain"
    return domains.pop(), None


def _record(lookups: Lookups, domain: str) -> dict[str, str] | None:
    """The one DMARC record at _dmarc.<domain>, parsed; None if there is not exactly one."""
    found = [r.decode("utf-8", "replace").strip() for r in lookups.txt(f"_dmarc.{domain}")]
    records = [r for r in found if re.match(r"^v\s*=\s*DMARC1\s*(;|$)", r)]
    if len(records) != 1:
        return None
    try:
        tags = dmarc_lookup.answer_to_dict(records[0])
    except dmarc_lookup.DMARCException:
        return None
    if tags.get("p") not in ("none", "quarantine", "reject"):
        if not tags.get("rua"):
            return None  # 6.6.3 step 6: no valid policy and nobody to report to
        tags["p"] = "none"
    if "sp" in tags and tags["sp"] not in ("none", "quarantine", "reject"):
        del tags["sp"]
    return tags


def discover_dmarc(lookups: Lookups, raw: bytes) -> DmarcPolicy:
    header_from, problem = header_from_domain(raw)
    if header_from is None:
        return DmarcPolicy(header_from=None, permerror=problem)
    try:
        record = _record(lookups, header_from)
        if record is not None:
            return DmarcPolicy(header_from, record, header_from)
        organizational = organizational_domain(header_from)
        if organizational != header_from:
            record = _record(lookups, organizational)
            if record is not None:
                return DmarcPolicy(header_from, record, organizational, subdomain=True)
    except DnsTempError as exc:
        return DmarcPolicy(header_from, temperror=_reason(exc))
    return DmarcPolicy(header_from)


def evaluate_dmarc(policy: DmarcPolicy, spf_verdict: SpfVerdict | None,
                   dkim_verdicts: list[DkimVerdict]) -> DmarcVerdict:
    """RFC 7489 6.6.2: pass when SPF or a DKIM signature passed for an aligned domain."""
    if policy.permerror is not None:
        return DmarcVerdict(result="permerror", header_from=None, reason=policy.permerror)
    assert policy.header_from is not None
    if policy.temperror is not None:
        return DmarcVerdict(result="temperror", header_from=policy.header_from,
                            reason=policy.temperror)
    if policy.record is None:
        return DmarcVerdict(result="none", header_from=policy.header_from,
                            reason="no DMARC record")
    record = policy.record
    applies = record.get("sp", record["p"]) if policy.subdomain else record["p"]
    strict_spf = record.get("aspf") == "s"
    strict_dkim = record.get("adkim") == "s"
    spf_aligned = (spf_verdict is not None and spf_verdict.result == "pass"
                   and aligned(spf_verdict.domain, policy.header_from, strict_spf))
    dkim_aligned = any(v.result == "pass" and aligned(v.domain, policy.header_from, strict_dkim)
                       for v in dkim_verdicts)
    passed = spf_aligned or dkim_aligned
    return DmarcVerdict(
        result="pass" if passed else "fail", header_from=policy.header_from,
        policy=applies,  # type: ignore[arg-type]  # validated by _record
        policy_domain=policy.policy_domain,
        spf_alignment="strict" if strict_spf else "relaxed",
        dkim_alignment="strict" if strict_dkim else "relaxed",
        spf_aligned=spf_aligned, dkim_aligned=dkim_aligned,
        reason=None if passed else "no SPF or DKIM pass aligned with the From domain",
    )


# --- iprev ---------------------------------------------------------------------------------


def check_iprev(lookups: Lookups, ip: str | None) -> IprevVerdict | None:
    """RFC 8601 3: a PTR name of the client address that resolves back to it."""
    address = _client_address(ip)
    if address is None:
        if not ip:
            return None
        return IprevVerdict(result="permerror", ip=ip[:64], reason="not an IP address")
    text = str(address)
    try:
        names = lookups.ptr(text)
    except DnsTempError as exc:
        return IprevVerdict(result="temperror", ip=text, reason=_reason(exc))
    if not names:
        return IprevVerdict(result="fail", ip=text, reason="no PTR record")
    temporary: str | None = None
    for name in names[:MAX_PTR_NAMES]:
        try:
            forward = lookups.addresses(name, address.version)
        except DnsTempError as exc:
            temporary = str(exc)
            continue
        if any(_client_address(a) == address for a in forward):
            return IprevVerdict(result="pass", ip=text, hostname=_normal_domain(name))
    if temporary is not None:
        return IprevVerdict(result="temperror", ip=text, reason=_reason(temporary))
    return IprevVerdict(result="fail", ip=text,
                        reason="no PTR name resolves back to the address")


# --- Authentication-Results ----------------------------------------------------------------


def _safe(value: str | None) -> str | None:
    """A property value that needs no escaping beyond authres's quoting; else left out."""
    return value if value and _SAFE_VALUE.match(value) else None


def results_header(
    authserv_id: str, *, spf_verdict: SpfVerdict | None, dkim_verdicts: list[DkimVerdict],
    dmarc: DmarcVerdict, arc: ArcVerdict | None, iprev: IprevVerdict | None,
    auth_user: str | None = None,
) -> str:
    """The header field value (RFC 8601 section 2.2), folded before each result when long.

    Values that came from the sender (HELO, domains, selectors) appear only when they are
    plain tokens, so no input can change the syntax of the field. Reasons stay in the event.
    """
    results: list[Any] = []
    if auth_user is not None:
        results.append(SMTPAUTHAuthenticationResult(result="pass", smtp_auth=_safe(auth_user)))
    if iprev is not None:
        results.append(IPRevAuthenticationResult(
            result=iprev.result, policy_iprev=iprev.ip,
            policy_iprev_comment=iprev.hostname if _safe(iprev.hostname) else None))
    if spf_verdict is not None:
        if spf_verdict.identity == "mailfrom":
            results.append(SPFAuthenticationResult(
                result=spf_verdict.result, smtp_mailfrom=_safe(spf_verdict.smtp_mailfrom)))
        else:
            results.append(SPFAuthenticationResult(
                result=spf_verdict.result, smtp_helo=_safe(spf_verdict.smtp_helo)))
    for verdict in dkim_verdicts:
        clause = DKIMAuthenticationResult(result=verdict.result, header_d=_safe(verdict.domain),
                                          header_s=_safe(verdict.selector))
        if _safe(verdict.signature_prefix):
            clause.properties.append(
                AuthenticationResultProperty("header", "b", verdict.signature_prefix))
        results.append(clause)
    if not dkim_verdicts:
        results.append(DKIMAuthenticationResult(result="none"))
    results.append(DMARCAuthenticationResult(
        result=dmarc.result, result_comment=f"p={dmarc.policy}" if dmarc.policy else None,
        header_from=_safe(dmarc.header_from)))
    if arc is not None:
        results.append(ARCAuthenticationResult(result=arc.result))
    header = AuthenticationResultsHeader(authserv_id=authserv_id, results=results)
    value = header.header_value()
    if len(HEADER_NAME) + 2 + len(value) <= 78:
        return value
    return ";\r\n\t".join([header.authserv_id, *(str(r) for r in results)])


# --- all of it ----------------------------------------------------------------------------


class Authenticator:
    """Verifies mails with one resolver; each check of a mail runs in a worker thread and
    ends within ``budget`` seconds of its start."""

    def __init__(self, resolver: Resolver, authserv_id: str, budget: float,
                 threads: int = 16) -> None:
        self.resolver = resolver
        self.authserv_id = authserv_id
        self.budget = budget
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="mail-authentication")

    def _run(self, check: Any, *args: Any) -> asyncio.Future[Any]:
        budget = self.budget

        def run() -> Any:
            # the deadline starts when the check does, not while it waits for a thread
            return check(self.resolver.lookups(budget), *args)

        return asyncio.get_running_loop().run_in_executor(self._executor, run)

    async def authenticate(self, raw: bytes, facts: SmtpFacts) -> Verdicts:
        spf_verdict, dkim_verdicts, arc, policy, iprev = await asyncio.gather(
            self._run(check_spf, facts),
            self._run(check_dkim, raw),
            self._run(check_arc, raw),
            self._run(discover_dmarc, raw),
            self._run(check_iprev, facts.client_ip),
        )
        dmarc = evaluate_dmarc(policy, spf_verdict, dkim_verdicts)
        header = results_header(
            self.authserv_id, spf_verdict=spf_verdict, dkim_verdicts=dkim_verdicts,
            dmarc=dmarc, arc=arc, iprev=iprev, auth_user=facts.auth_user,
        )
        return Verdicts(self.authserv_id, spf_verdict, dkim_verdicts, dmarc, arc, iprev, header)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

