"""Pure extraction logic: raw MIME bytes in; body text, attachments and their metadata out.

No I/O framework here (no NATS, database or blob store), so every rule is testable with
plain bytes. :func:`parse_mail` is what the service calls; the parsing library it stands on
is ``parsing/`` (see its docstring for the rules on hostile input). The bounds it applies:

- at most ``max_parts`` MIME parts are parsed and looked at (the parser stops reading after
  them), multiparts and attached messages are followed ``max_depth`` levels deep;
- attachments larger than ``max_attachment_bytes`` are skipped;
- body text is cut at ``body_text_limit`` characters, PDF text at ``text_excerpt_chars``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from email.message import Message

from postroom_contracts import DocumentMetadata

from .parsing import mime
from .parsing.body import BodyText
from .parsing.defects import Defects
from .parsing.filenames import safe_filename
from .parsing.formats import SUPPORTED_TYPES, document_metadata
from .parsing.sniff import sniff_content_type


@dataclass(frozen=True)
class Limits:
    max_parts: int = 200
    max_depth: int = 10
    max_attachment_bytes: int = 26_214_400
    include_inline: bool = False
    body_text_limit: int = 65_536
    text_excerpt_chars: int = 2_000


@dataclass
class Attachment:
    """One file attachment, ready to be stored as a document."""

    index: int
    filename: str
    declared_type: str
    sniffed_type: str | None
    data: bytes = field(repr=False)
    supported: bool
    metadata: DocumentMetadata
    part: str  # MIME section number, e.g. "1.2"

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class ParsedMail:
    body_text: str = ""
    body_text_truncated: bool = False
    has_html: bool = False
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    skipped_parts: int = 0
    defects: list[str] = field(default_factory=list)


def parse_mail(raw: bytes, limits: Limits = Limits()) -> ParsedMail:
    """Parse one mail; never raises on malformed MIME: what is wrong is in ``defects``."""
    defects = Defects()
    result = ParsedMail()
    msg, walkable = mime.parse(raw, limits.max_parts, defects)
    result.in_reply_to = mime.in_reply_to(msg)
    result.references = mime.references(msg)

    body = BodyText(limits.body_text_limit)
    attachments: list[Attachment] = []
    skipped = 0
    walk = mime.Walk(msg if walkable else None, limits.max_parts, limits.max_depth, defects)
    for leaf in walk:
        if leaf.kind == "body":
            if not leaf.embedded:  # the text of an attached message is not this mail's body
                body.add(leaf.part, leaf.content_type, defects, f"part {leaf.where}")
            continue
        if leaf.kind == "ignore":
            continue
        if leaf.kind == "inline-image" and not limits.include_inline:
            skipped += 1
            continue
        try:
            attachment = _attachment(leaf, len(attachments), limits, defects)
        except Exception as exc:  # a safety net: one odd part must not cost the whole mail
            defects.add(f"part {leaf.where}: could not be read ({type(exc).__name__}): skipped")
            attachment = None
        if attachment is None:
            skipped += 1
        else:
            attachments.append(attachment)

    result.attachments = attachments
    result.skipped_parts = walk.skipped + skipped
    result.body_text, result.body_text_truncated = body.result()
    result.has_html = body.has_html
    result.defects = defects.result()
    return result


def _attachment(leaf: mime.Leaf, index: int, limits: Limits,
                defects: Defects) -> Attachment | None:
    part: Message = leaf.part
    declared = leaf.content_type
    name_for_defect = safe_filename(leaf.filename, index, declared)
    data = mime.payload(part, limits.max_attachment_bytes, defects,
                        f"part {leaf.where}: attachment {name_for_defect!r}")
    if data is None:
        return None
    declared = declared[:255]
    sniffed = sniff_content_type(data, declared, leaf.filename or "")
    filename = safe_filename(leaf.filename, index, sniffed or declared)
    return Attachment(
        index=index,
        filename=filename,
        declared_type=declared,
        sniffed_type=sniffed,
        data=data,
        supported=sniffed in SUPPORTED_TYPES,
        metadata=document_metadata(data, sniffed, excerpt_chars=limits.text_excerpt_chars),
        part=leaf.where,
    )


__all__ = ["SUPPORTED_TYPES", "Attachment", "Limits", "ParsedMail", "parse_mail"]
