"""The ``Authentication-Results`` header field (RFC 8601) of the verdicts, written with authres."""

from __future__ import annotations

import re
from typing import Any

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

HEADER_NAME = "Authentication-Results"
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9!#$%&'*+./=?^_`{|}~@-]{1,200}$")


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
