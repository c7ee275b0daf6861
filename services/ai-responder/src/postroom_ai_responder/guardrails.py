"""Guardrails around the model: what it is given (PII redacted where the tenant asks) and
what it may say (every number, date, amount, phone number and order id of a draft must be in
the thread or the knowledge base; no address or link from nowhere; no forbidden topic). The
model never chooses recipients: they come from the mail's headers and the policy."""

from __future__ import annotations

import re

# a run of digits with the separators numbers, dates, amounts, phone numbers and ids use:
# "+49 30 1234 5678", "12.01.2027", "1,299.00", "BE-20931", "8:00", "#4411"
_FACT = re.compile(r"(?<![\w])[A-Za-z]{0,6}[-#]?\+?\(?\d(?:[\d.,:/()\-]|\s(?=\d))*\d?")
_GROUPS = re.compile("\\s*[-/\u2013]\\s*|\\s+")  # "-", "/", an en dash, blanks
_LIST_MARKER = re.compile(r"^\s*\d{1,2}[.)]\s", re.M)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(r"\bhttps?://[^\s<>\"')]+|\bwww\.[^\s<>\"')]+", re.I)
_PHONE = re.compile(r"(?<![\w])\+?\d[\d\s().\-/]{6,}\d(?![\w])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:\s?[A-Z0-9]{4}){2,7}(?:\s?[A-Z0-9]{1,4})?\b")
_CARD = re.compile(r"\b(?:\d[ -]?){13,19}\b")
INJECTION = re.compile(
    r"(ignore|disregard|forget)\s+(all\s+|any\s+|the\s+)?(previous|prior|above|earlier|your)?"
    r"\s*(instructions|rules|prompt|guidelines)|system\s+prompt|you\s+are\s+now\b|"
    r"new\s+instructions|act\s+as\s+(an?\s+)?|developer\s+mode|jailbreak|"
    r"(send|forward|copy|cc|bcc)\s+(this|the|a|your)?\s*(reply|answer|mail|email|copy)?\s*"
    r"(also\s+)?to\s+[\w.+-]+@|"
    r"ignorez?\s+(toutes\s+)?les\s+instructions|ignoriere\s+(alle\s+)?(vorherigen\s+)?"
    r"anweisungen", re.I)


def _digits(token: str) -> str:
    return re.sub(r"\D", "", token)


def _normal(token: str) -> str:
    """A fact's digits, without trailing decimal zeros ('30.00' is '30')."""
    token = re.sub(r"[.,]0{1,2}$", "", token.strip().rstrip(".,:/-()"))
    return _digits(token)


def facts(text: str) -> set[str]:
    """The digit strings of every number-like token of ``text``, normalised."""
    text = _LIST_MARKER.sub(" ", text)
    out = set()
    for match in _FACT.finditer(text):
        token = match.group(0)
        digits = _normal(token)
        if digits:
            out.add(digits)
            # each group alone too: "8:00-18:00" states 8:00 and 18:00
            out.update(_normal(g) for g in _GROUPS.split(token) if _normal(g))
    return out


def unsupported_facts(draft: str, sources: list[str]) -> list[str]:
    """Number-like tokens of ``draft`` that appear in none of ``sources``, as written."""
    known = set().union(*(facts(s) for s in sources)) if sources else set()
    missing: list[str] = []
    for match in _FACT.finditer(_LIST_MARKER.sub(" ", draft)):
        token = match.group(0).strip().rstrip(".,:")
        digits = _normal(token)
        if not digits or digits in known:
            continue
        groups = [_normal(g) for g in _GROUPS.split(token) if _normal(g)]
        if groups and all(g in known for g in groups):
            continue
        if token not in missing:
            missing.append(token)
    return missing


def unsupported_links(draft: str, sources: list[str]) -> list[str]:
    """E-mail addresses and links in the draft that no source contains."""
    joined = "\n".join(sources).lower()
    out = []
    for pattern in (_EMAIL, _URL):
        for match in pattern.finditer(draft):
            value = match.group(0).rstrip(".,;:")
            if value.lower() not in joined and value not in out:
                out.append(value)
    return out


def topics_in(text: str, topics: list[str]) -> list[str]:
    lowered = text.lower()
    return [t for t in topics if t.strip() and re.search(
        rf"(?<!\w){re.escape(t.strip().lower())}(?!\w)", lowered)]


def injection_in(text: str) -> str | None:
    """The first phrase of ``text`` that tries to instruct the assistant, or None."""
    match = INJECTION.search(text)
    return " ".join(match.group(0).split())[:80] if match else None


def redact(text: str) -> str:
    """Addresses, IBANs, card numbers and phone numbers replaced by placeholders."""
    text = _EMAIL.sub("[email]", text)
    text = _IBAN.sub("[iban]", text)
    text = _CARD.sub(lambda m: "[card]" if len(_digits(m.group(0))) >= 13 else m.group(0),
                     text)
    return _PHONE.sub(lambda m: "[phone]" if len(_digits(m.group(0))) >= 8 else m.group(0),
                      text)


def repeated(text: str, times: int = 3) -> str | None:
    """A sentence the draft says ``times`` times or more (a small model looping), or None."""
    counts: dict[str, int] = {}
    for sentence in re.split(r"(?<=[.!?])\s+|\n+", text):
        key = " ".join(sentence.lower().split())
        if len(key) >= 12:
            counts[key] = counts.get(key, 0) + 1
            if counts[key] >= times:
                return sentence.strip()[:60]
    return None


def review(draft: str, *, sources: list[str], link_sources: list[str], forbidden: list[str],
           injection: str | None, language: str | None = None,
           cut_off: bool = False) -> list[str]:
    """Why a person must review this draft before it is sent (empty: nothing found).
    Numbers may come from any source; addresses and links only from ``link_sources`` (the
    knowledge base, earlier messages, the sender's own address), not from the mail being
    answered, which anyone can write."""
    reasons = []
    for token in unsupported_facts(draft, sources):
        reasons.append(f"'{token}' is in neither the thread nor the knowledge base")
    for link in unsupported_links(draft, link_sources):
        reasons.append(f"'{link}' is in neither the knowledge base nor earlier messages")
    for topic in topics_in(draft, forbidden):
        reasons.append(f"mentions a forbidden topic: {topic}")
    if injection:
        reasons.append(f"the mail tries to instruct the assistant ('{injection}')")
    if language is not None and draft.strip():
        from .mail import detect_language

        written = detect_language(draft, default=language)
        if written != language:
            reasons.append(f"written in '{written}', the reply's language is '{language}'")
    loop = repeated(draft)
    if loop:
        reasons.append(f"repeats itself ('{loop}')")
    if cut_off:
        reasons.append("cut off at the longest draft allowed (AI_MAX_TOKENS)")
    if not draft.strip():
        reasons.append("the model wrote nothing")
    return reasons
