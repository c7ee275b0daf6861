"""HTML to text."""

from __future__ import annotations

from postroom_attachment_extractor.parsing.html import html_to_text


def test_html_to_text_survives_broken_markup() -> None:
    assert html_to_text("<p>unclosed <b>bold <i>and</p> <<<>>> &bogus; text") == \
        "unclosed bold and\n<<<>>> &bogus; text"
