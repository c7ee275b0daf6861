"""Mail authentication: SPF, DKIM, DMARC, ARC and iprev verdicts of one mail, and the
``Authentication-Results`` header field (RFC 8601) that states them.

Input: the raw message and what the SMTP session knew (client IP, HELO, MAIL FROM). Output:
:class:`Verdicts`, the contract models of ``mail.authenticated``. The verification itself is
the well-kept libraries': pyspf (RFC 7208), dkimpy (RFC 6376 signatures and RFC 8617 ARC
chains), authheaders' DMARC record parsing and organizational domain (public suffix list) and
authres's header syntax. This module adds what they leave to the caller:

- every DNS question goes through :mod:`.dns_lookups` (configured servers, a deadline per
  check, ``temperror`` on timeout or SERVFAIL), pyspf's included;
- one verdict per DKIM signature with ``temperror``, ``permerror`` and ``fail`` told apart
  (:mod:`.auth_checks`, with SPF, ARC and iprev);
- DMARC alignment (RFC 7489 3.1) from the SPF and DKIM verdicts, with the policy that applies
  (:mod:`.auth_dmarc`);
- a header into which no sender-controlled value can inject syntax (:mod:`.auth_header`).

The checks of one mail run in worker threads, concurrently (the DMARC record is looked up while
SPF and DKIM run), so a resolver that never answers costs one budget per mail, not one per
lookup.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from postroom_contracts import ArcVerdict, DkimVerdict, DmarcVerdict, IprevVerdict, SpfVerdict

from .auth_checks import SmtpFacts, check_arc, check_dkim, check_iprev, check_spf
from .auth_dmarc import discover_dmarc, evaluate_dmarc
from .auth_header import HEADER_NAME, results_header
from .dns_lookups import Resolver

__all__ = ["Authenticator", "SmtpFacts", "Verdicts"]


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
        """No new checks; those running end by their deadline (a mail being verified when the
        service stops is not acked, so it is verified again after the restart)."""
        self._executor.shutdown(wait=False)
