"""What ai-responder reads from a raw mail: the header fields the loop guard needs, the
sender, the thread (Message-ID, In-Reply-To, References), the text, the language."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import getaddresses, parseaddr
from html import unescape

MAX_BODY_CHARS = 20_000
_MSGID = re.compile(r"<[^<>\s]+>")
_TAGS = re.compile(r"<[^>]+>")
_QUOTE_INTRO = re.compile(
    r"^(on .{0,200} wrote:|le .{0,200} a écrit ?:|am .{0,200} schrieb .{0,200}:|"
    r"-{2,} ?(original message|ursprüngliche nachricht|message d'origine) ?-{2,})\s*$",
    re.I | re.M)


@dataclass
class MailFacts:
    message_id: str | None
    subject: str
    sender: str  # the address a reply goes to (Reply-To, else From), lower-case domain
    sender_name: str
    from_address: str  # the From address (the author)
    in_reply_to: str | None
    references: list[str]
    body_text: str  # the new text of the mail (without the quoted thread)
    quoted_text: str  # the earlier messages quoted below it
    content_type: str
    headers: Message = field(repr=False)
    language: str = "en"

    @property
    def thread_id(self) -> str:
        """The first message of the thread: References' first, else In-Reply-To, else this."""
        if self.references:
            return self.references[0]
        return self.in_reply_to or self.message_id or ""

    @property
    def thread(self) -> list[str]:
        """References of a reply to this mail (RFC 5322 3.6.4): its References (or its
        In-Reply-To) and its own Message-ID."""
        out = list(self.references) or ([self.in_reply_to] if self.in_reply_to else [])
        if self.message_id and self.message_id not in out:
            out.append(self.message_id)
        return out


def _address(value: str) -> str:
    local, _, domain = value.strip().rpartition("@")
    return f"{local}@{domain.lower()}" if local else value.strip().lower()


def message_ids(value: str | None) -> list[str]:
    return _MSGID.findall(value or "")


def _text_of(message: Message) -> str:
    """The first text/plain part, else the first text/html part without its tags."""
    plain: str | None = None
    html: str | None = None
    for part in message.walk():
        if part.is_multipart() or part.get_content_disposition() == "attachment":
            continue
        ctype = part.get_content_type()
        if ctype not in ("text/plain", "text/html"):
            continue
        try:
            payload = part.get_content() if isinstance(part, EmailMessage) else \
                part.get_payload(decode=True).decode(part.get_content_charset() or "utf-8",
                                                      "replace")
        except (LookupError, UnicodeDecodeError, AttributeError):
            continue
        if ctype == "text/plain" and plain is None:
            plain = str(payload)
        elif ctype == "text/html" and html is None:
            html = str(payload)
    if plain is not None:
        return plain
    if html is not None:
        text = re.sub(r"(?i)<(br|/p|/div|/li)\b[^>]*>", "\n", html)
        return unescape(_TAGS.sub("", text))
    return ""


def split_quoted(text: str) -> tuple[str, str]:
    """(new text, quoted earlier messages): quoted lines start with '>' or follow an
    'On ... wrote:' line."""
    match = _QUOTE_INTRO.search(text)
    head, tail = (text[:match.start()], text[match.start():]) if match else (text, "")
    new, quoted = [], []
    for line in head.splitlines():
        (quoted if line.lstrip().startswith(">") else new).append(line)
    quoted_text = "\n".join(q.lstrip("> ").rstrip() for q in quoted)
    if tail:
        quoted_text = (quoted_text + "\n" + tail).strip()
    return "\n".join(new).strip(), quoted_text.strip()


_WORDS = {
    "en": {"the", "and", "you", "is", "my", "i", "to", "of", "for", "please", "hello", "hi",
           "thanks", "what", "when", "how", "can", "your", "order", "would", "with", "have"},
    "fr": {"le", "la", "les", "et", "vous", "est", "je", "de", "pour", "bonjour", "merci",
           "mon", "ma", "une", "un", "des", "votre", "commande", "quand", "pouvez", "avec",
           "cordialement", "pas", "que", "qui"},
    "de": {"der", "die", "das", "und", "sie", "ist", "ich", "zu", "für", "hallo", "danke",
           "mein", "meine", "ein", "eine", "ihre", "bestellung", "wann", "können", "mit",
           "grüße", "nicht", "bitte", "guten", "tag", "sehr", "geehrte"},
}
LANGUAGES = tuple(_WORDS)


def detect_language(text: str, default: str = "en") -> str:
    """en, fr or de by common words; ``default`` when none is clearly ahead."""
    words = re.findall(r"[a-zäöüßàâçéèêëîïôûùüÿœ]+", text.lower())[:400]
    scores = {lang: sum(1 for w in words if w in vocab) for lang, vocab in _WORDS.items()}
    best = max(scores, key=lambda k: scores[k])
    if scores[best] == 0 or list(scores.values()).count(scores[best]) > 1:
        return default
    return best


def parse_mail(raw: bytes) -> MailFacts:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    headers = BytesParser(policy=policy.compat32).parsebytes(raw, headersonly=True)
    from_name, from_addr = parseaddr(str(message.get("From", "") or ""))
    reply_to = [a for _, a in getaddresses([str(v) for v in message.get_all("Reply-To", [])])
                if "@" in a]
    sender = reply_to[0] if reply_to else from_addr
    in_reply_to = message_ids(str(message.get("In-Reply-To", "") or ""))
    references = message_ids(" ".join(str(v) for v in message.get_all("References", [])))
    ids = message_ids(str(message.get("Message-ID", "") or ""))
    text = _text_of(message)[:MAX_BODY_CHARS]
    new, quoted = split_quoted(text)
    subject = " ".join(str(message.get("Subject", "") or "").split())
    facts = MailFacts(
        message_id=ids[0] if ids else None, subject=subject, sender=_address(sender),
        sender_name=from_name.strip(), from_address=_address(from_addr),
        in_reply_to=in_reply_to[0] if in_reply_to else None, references=references,
        body_text=new, quoted_text=quoted, content_type=message.get_content_type(),
        headers=headers)
    facts.language = detect_language(f"{subject}\n{new}")
    return facts
