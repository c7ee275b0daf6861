"""HTML to plain text, for mails that have an HTML body only."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any


class _HTMLText(HTMLParser):
    """Text of an HTML body: tags stripped, scripts and styles dropped, blocks on new lines."""

    BLOCKS = frozenset({"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6",
                        "table", "ul", "ol", "blockquote", "pre", "hr", "section", "article",
                        "header", "footer", "dt", "dd"})
    SKIP = frozenset({"script", "style", "template", "noscript"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCKS:
            self.chunks.append("\n")
        elif tag == "td":
            self.chunks.append("\t")

    def handle_startendtag(self, tag: str, attrs: Any) -> None:
        if tag in self.BLOCKS:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.BLOCKS:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.chunks.append(data)


def html_to_text(html: str) -> str:
    """Never raises: on markup the parser gives up on, the text read so far."""
    parser = _HTMLText()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # keep whatever was read before the parser gave up
        pass
    lines = (" ".join(line.split()) for line in "".join(parser.chunks).splitlines())
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
