"""The body text of a mail: its plain-text parts, or the text of its HTML parts when it has
no plain text; bounded in what is decoded and in what is kept."""

from __future__ import annotations

from email.message import Message

from .defects import Defects
from .html import html_to_text
from .mime import part_text
from .text import clean_text

HTML_INPUT_FACTOR = 20  # HTML read per character of text wanted


class BodyText:
    """Collects the body parts of a mail (in document order) up to ``limit`` characters of
    text (``limit * HTML_INPUT_FACTOR`` characters of HTML)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.has_html = False
        self.plain: list[str] = []
        self.html: list[str] = []
        self.plain_size = 0
        self.html_size = 0
        self.dropped = False  # a body part was not read: the limit was reached before it

    def add(self, part: Message, content_type: str, defects: Defects, where: str) -> None:
        if content_type == "text/plain":
            if self.plain_size < self.limit:
                text = part_text(part, defects, where)
                self.plain.append(text)
                self.plain_size += len(text)
            else:
                self.dropped = True
        elif content_type == "text/html":
            self.has_html = True
            if self.plain:
                return
            if self.html_size < self.limit * HTML_INPUT_FACTOR:
                text = part_text(part, defects, where)
                self.html.append(text)
                self.html_size += len(text)
            else:
                self.dropped = True

    def result(self) -> tuple[str, bool]:
        """The text and whether it was cut."""
        text, truncated = self._text()
        return text, truncated or (self.dropped and bool(text))

    def _text(self) -> tuple[str, bool]:
        limit = self.limit
        if self.plain:
            text = "\n\n".join(t.strip("\r\n") for t in self.plain)
            text = text.replace("\r\n", "\n")
        elif self.html:
            cut = False
            source = "\n".join(self.html)
            if len(source) > limit * HTML_INPUT_FACTOR:
                source, cut = source[: limit * HTML_INPUT_FACTOR], True
            text = html_to_text(source)
            if cut:
                return clean_text(text)[:limit], True
        else:
            return "", False
        text = clean_text(text)
        if len(text) > limit:
            return text[:limit], True
        return text, False
