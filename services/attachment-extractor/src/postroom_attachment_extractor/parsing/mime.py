"""Reading the MIME structure of a mail: a bounded parse, the walk over its parts, the
threading headers, and the decoded payloads of leaf parts.

The stdlib ``email`` package does the parsing; what is added here is the bounds (parts read,
header characters parsed, nesting followed, bytes decoded) and leniency (no call on a part
may raise: what goes wrong becomes a defect).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.feedparser import BytesFeedParser
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import EmailPolicy
from typing import Any, Literal, TypeVar

from .defects import Defects
from .text import clean_text

MAX_REFERENCES = 100
MAX_HEADER_CHARS = 998
MAX_PARSED_HEADER_CHARS = 8192
PARSE_CHUNK_BYTES = 8192

T = TypeVar("T")

Kind = Literal["body", "inline-image", "attachment", "ignore"]


class _BoundedPolicy(EmailPolicy):
    """``policy.default``, except that a header is parsed from its first
    ``MAX_PARSED_HEADER_CHARS`` characters only: the header registry's cost grows much faster
    than a header's length (40,000 encoded words in one Subject took 10 GB and 14 s)."""

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if len(value) > MAX_PARSED_HEADER_CHARS:
            value = value[:MAX_PARSED_HEADER_CHARS]
        return super().header_fetch_parse(name, value)


MAIL_POLICY = _BoundedPolicy()


def _safe(call: Callable[[], T], default: T) -> T:
    try:
        return call()
    except Exception:
        return default


# --- parsing --------------------------------------------------------------------------------


def _parse_bounded(raw: bytes, max_parts: int) -> tuple[Message, bool]:
    """Parse with (bounded) ``policy.default``, but stop reading once more than
    ``max_parts`` parts exist (a part bomb would otherwise cost seconds per megabyte in
    header parsing).

    Parts are created in document order, the order the walk visits them, so every part
    the walk may use is complete when we stop. Returns the message and whether input was
    left unread.
    """
    created = 0

    def factory(policy: Any = None) -> Message:  # the parser passes its policy
        nonlocal created
        created += 1
        return EmailMessage(policy=policy)

    parser = BytesFeedParser(_factory=factory, policy=MAIL_POLICY)
    created = 0  # the parser probes the factory once
    view = memoryview(raw)
    for start in range(0, len(raw), PARSE_CHUNK_BYTES):
        parser.feed(bytes(view[start: start + PARSE_CHUNK_BYTES]))
        if created > max_parts + 1 and start + PARSE_CHUNK_BYTES < len(raw):
            return parser.close(), True
    return parser.close(), False


def _long_headers(part: Message, where: str, defects: Defects) -> None:
    for name, value in _safe(part.raw_items, []):
        if isinstance(value, str) and len(value) > MAX_PARSED_HEADER_CHARS:
            defects.add(f"{where}: header {clean_text(str(name))[:60]} is {len(value)} "
                        f"characters long: only the first {MAX_PARSED_HEADER_CHARS} were read")


def _root_defects(msg: Message, defects: Defects) -> None:
    defects.of("message", msg.defects)
    _long_headers(msg, "message", defects)
    for name in list(_safe(msg.keys, []))[:100]:
        value = _safe(lambda n=name: msg[n], None)
        defects.of(f"header {clean_text(str(name))[:60]}", getattr(value, "defects", ()))


def parse(raw: bytes, max_parts: int, defects: Defects) -> tuple[Message, bool]:
    """The mail, read up to a little past ``max_parts`` parts, and whether its parts can be
    walked (False: nested too deeply for the parser, only the headers were read). The
    defects of the message and its headers are added to ``defects``."""
    try:
        msg, cut = _parse_bounded(raw, max_parts)
        walkable = True
        if cut:  # the walk reports the part limit; unclosed multiparts are our doing
            defects.ignore.add("CloseBoundaryNotFoundDefect")
    except RecursionError:
        defects.add("MIME structure nested too deeply to parse: only the headers were read")
        msg = BytesParser(policy=MAIL_POLICY).parsebytes(raw, headersonly=True)
        walkable = False
    _root_defects(msg, defects)
    return msg, walkable


# --- threading headers ----------------------------------------------------------------------


def _raw_header(msg: Message, name: str) -> str | None:
    """A header's raw value, unfolded, without the header registry (threading headers are
    read with a regular expression: a long References header is normal)."""
    for key, value in _safe(msg.raw_items, []):
        if str(key).lower() == name.lower() and isinstance(value, str):
            return " ".join(clean_text(value).split())
    return None


_MSG_ID = re.compile(r"<[^<>\s]{1,250}>")


def in_reply_to(msg: Message) -> str | None:
    value = _raw_header(msg, "In-Reply-To")
    if not value:
        return None
    found = _MSG_ID.search(value)
    return found.group(0) if found else value[:MAX_HEADER_CHARS]


def references(msg: Message) -> list[str]:
    """The Message-IDs in References: all of them, or the first (the thread's root) and the
    ``MAX_REFERENCES - 1`` most recent ones."""
    refs = _MSG_ID.findall(_raw_header(msg, "References") or "")
    return refs if len(refs) <= MAX_REFERENCES else refs[:1] + refs[-(MAX_REFERENCES - 1):]


# --- the walk -------------------------------------------------------------------------------


def _filename(part: Message) -> str | None:
    name = _safe(part.get_filename, None)
    if name is None:
        # the header-registry parser gave up on the parameter: read it the lenient way
        raw = _safe(lambda: part.get_param("filename", header="content-disposition"), None) \
            or _safe(lambda: part.get_param("name"), None)
        if isinstance(raw, tuple):
            raw = _safe(lambda: raw[2].encode("latin-1").decode(raw[0] or "utf-8", "replace"),
                        raw[2])
        name = raw if isinstance(raw, str) else None
    return name or None


def _kind(ctype: str, disposition: str | None, filename: str | None, has_cid: bool) -> Kind:
    """What one leaf part is to the reader of the mail."""
    maintype = ctype.split("/", 1)[0]
    if ctype in ("text/plain", "text/html") and disposition != "attachment" and not (
        filename and disposition is None
    ):
        return "body"
    if maintype == "image" and disposition != "attachment" and (
        disposition == "inline" or has_cid or not filename
    ):
        return "inline-image"
    if disposition == "attachment" or filename or maintype != "text":
        return "attachment"
    return "ignore"


@dataclass
class Leaf:
    """A part that is not a container: body text, an inline image, an attachment, or a text
    part nobody reads (``kind`` says which)."""

    part: Message
    where: str  # MIME section number, e.g. "1.2"
    content_type: str
    filename: str | None  # as the headers give it, not yet sanitised
    kind: Kind
    embedded: bool  # inside an attached message


class Walk:
    """The leaves of a mail in document order, at most ``max_parts`` parts (containers
    included) and ``max_depth`` levels deep. Iterating adds each part's defects and what was
    cut off to ``defects``; ``skipped`` counts the parts left out."""

    def __init__(self, msg: Message | None, max_parts: int, max_depth: int,
                 defects: Defects) -> None:
        self.msg = msg
        self.max_parts = max_parts
        self.max_depth = max_depth
        self.defects = defects
        self.skipped = 0

    def __iter__(self) -> Iterator[Leaf]:
        msg, defects = self.msg, self.defects
        # (part, depth, section number, inside an attached message)
        stack: list[tuple[Message, int, str, bool]] = (
            [] if msg is None else [(msg, 0, "1", False)])
        seen = 0
        while stack:
            part, depth, where, embedded = stack.pop()
            seen += 1
            if seen > self.max_parts:
                defects.add(f"more than {self.max_parts} MIME parts: the rest were skipped")
                self.skipped += 1 + len(stack)
                return
            if part is not msg:
                defects.of(f"part {where}", getattr(part, "defects", ()))
                _long_headers(part, f"part {where}", defects)
            ctype = _safe(part.get_content_type, "application/octet-stream")
            children = _safe(part.get_payload, None) if _safe(part.is_multipart, False) else None
            if ctype.startswith("multipart/") and not isinstance(children, list):
                defects.add(f"part {where}: {ctype} without readable parts: skipped")
                self.skipped += 1
                continue
            if isinstance(children, list):
                if depth >= self.max_depth:
                    defects.add(f"part {where}: nested deeper than {self.max_depth} levels: "
                                "skipped")
                    self.skipped += 1
                    continue
                inside = embedded or ctype.startswith("message/")
                for number in range(len(children), 0, -1):
                    child = children[number - 1]
                    if isinstance(child, Message):
                        stack.append((child, depth + 1, f"{where}.{number}", inside))
                continue
            disposition = _safe(part.get_content_disposition, None)
            filename = _filename(part)
            has_cid = _safe(lambda p=part: p.get("Content-ID") is not None, False)
            yield Leaf(part, where, ctype, filename,
                       _kind(ctype, disposition, filename, has_cid), embedded)


# --- payloads -------------------------------------------------------------------------------


def part_text(part: Message, defects: Defects, where: str) -> str:
    """A text part's body as text: its charset, else UTF-8, else Windows-1252 (or the charset
    with replacement characters)."""
    try:
        payload = part.get_payload(decode=True)
    except Exception as exc:
        defects.add(f"{where}: body undecodable: {type(exc).__name__}")
        return ""
    if not isinstance(payload, bytes):
        return ""
    charset = _safe(lambda: part.get_content_charset(), None) or "us-ascii"
    try:
        codecs.lookup(charset)
    except LookupError:
        defects.add(f"{where}: unknown charset {charset[:40]!r}")
        charset = "utf-8"
    for candidate in (charset, "utf-8"):
        try:
            return payload.decode(candidate)
        except (UnicodeDecodeError, LookupError):
            continue
    return payload.decode("cp1252" if charset in ("us-ascii", "ascii") else charset, "replace")


def payload(part: Message, max_bytes: int, defects: Defects, what: str) -> bytes | None:
    """A leaf part's decoded bytes, or None (with a defect naming ``what``) when they are
    larger than ``max_bytes`` or cannot be decoded. A payload whose encoded form is too
    large even for the most wasteful encoding is not decoded at all."""
    encoded = _safe(lambda: part.get_payload(decode=False), "")
    if isinstance(encoded, str) and len(encoded) > 2 * max_bytes + 4096:
        defects.add(f"{what} larger than {max_bytes} bytes: skipped")
        return None
    try:
        data = part.get_payload(decode=True)
    except Exception as exc:
        defects.add(f"{what} undecodable ({type(exc).__name__}): skipped")
        return None
    if not isinstance(data, bytes):
        data = b""
    if len(data) > max_bytes:
        defects.add(f"{what} is {len(data)} bytes, more than {max_bytes}: skipped")
        return None
    return data
