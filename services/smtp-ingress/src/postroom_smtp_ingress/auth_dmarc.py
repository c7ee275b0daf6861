"""DMARC (RFC 7489): policy discovery for the RFC5322.From domain (authheaders parses the
record and ships the public suffix list) and the evaluation of the SPF and DKIM verdicts
against it: relaxed or strict alignment, and the policy that applies (``p=``, or ``sp=`` for a
subdomain whose record is the organizational domain's)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from email.utils import getaddresses
from typing import Any

import dkim
from authheaders import dmarc_lookup

from postroom_contracts import DkimVerdict, DmarcVerdict, SpfVerdict

from .auth_checks import clean_reason, domain_of
from .dns_lookups import DnsTempError, Lookups


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
        return None, clean_reason(f"header cannot be parsed: {exc}")
    values = [v for name, v in headers if name.strip().lower() == b"from"]
    if not values:
        return None, "no From header field"
    if len(values) > 1:
        return None, "more than one From header field"
    text = values[0].decode("utf-8", "replace").replace("\r\n", "")
    domains = {domain_of(addr) for _, addr in getaddresses([text]) if addr}
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
        return DmarcPolicy(header_from, temperror=clean_reason(exc))
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
