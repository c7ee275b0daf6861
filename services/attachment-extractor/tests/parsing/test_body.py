"""A mail's body text: plain text preferred, HTML turned into text, bounded and flagged."""

from __future__ import annotations

import extractor_samples as samples

from postroom_attachment_extractor.handlers import Limits, parse_mail


def test_html_only_mail_gives_text_without_markup() -> None:
    html = ("<html><head><style>p {color: red}</style><script>alert('x')</script></head>"
            "<body><h1>Order&nbsp;42</h1><p>Qty: 3 &amp; more</p><table><tr><td>A</td>"
            "<td>B</td></tr></table></body></html>")
    parsed = parse_mail(samples.mail(text=None, html=html))
    assert parsed.has_html
    assert parsed.body_text == "Order 42\n\nQty: 3 & more\n\nA B"  # nbsp is a space
    assert "alert" not in parsed.body_text and "color" not in parsed.body_text


def test_body_text_is_bounded_and_flagged() -> None:
    parsed = parse_mail(samples.mail(text="x" * 500), Limits(body_text_limit=100))
    assert parsed.body_text == "x" * 100 and parsed.body_text_truncated
    short = parse_mail(samples.mail(text="x" * 100), Limits(body_text_limit=100))
    assert short.body_text == "x" * 100 and not short.body_text_truncated
    html = parse_mail(samples.mail(text=None, html="<p>" + "y" * 5000 + "</p>"),
                      Limits(body_text_limit=50))
    assert html.body_text == "y" * 50 and html.body_text_truncated
