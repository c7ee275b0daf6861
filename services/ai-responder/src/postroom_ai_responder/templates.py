"""Reply templates: Jinja2 HTML and text around the model's draft, with seed 002's variables
(``ai_response``, ``sender_name``, ``original_subject``, ``response_date``, ``thread_id``),
the tenant's disclaimer and the words of the sender's language (en, fr, de).

The shipped set is ``templates/<name>.{html,txt}.j2``; REPLY_TEMPLATE_DIR replaces it file by
file. HTML is autoescaped: the draft is text, never markup."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

SHIPPED = Path(__file__).parent / "templates"

WORDS: dict[str, dict[str, str]] = {
    "en": {"greeting": "Hello {name},", "greeting_anonymous": "Hello,",
           "closing": "Kind regards,", "disclaimer_label": "Disclaimer:",
           "disclaimer": "This reply was written with the help of an AI assistant and is "
                         "provided for information only.",
           "reply_prefix": "Re:"},
    "fr": {"greeting": "Bonjour {name},", "greeting_anonymous": "Bonjour,",
           "closing": "Cordialement,", "disclaimer_label": "Disclaimer :",
           "disclaimer": "Cette réponse a été rédigée avec l'aide d'un assistant IA et est "
                         "fournie à titre informatif uniquement.",
           "reply_prefix": "Re :"},
    "de": {"greeting": "Guten Tag {name},", "greeting_anonymous": "Guten Tag,",
           "closing": "Mit freundlichen Grüßen", "disclaimer_label": "Hinweis:",
           "disclaimer": "Diese Antwort wurde mit Hilfe eines KI-Assistenten verfasst und "
                         "dient nur zur Information.",
           "reply_prefix": "AW:"},
}


@dataclass
class Rendered:
    subject: str
    text: str
    html: str


def reply_subject(original: str, language: str) -> str:
    """'Re: <subject>' (once): the subject comes from the thread, never from the model."""
    stripped = original.strip()
    low = stripped.lower()
    if low.startswith(("re:", "re :", "aw:", "sv:", "antw:")):
        return stripped
    prefix = WORDS.get(language, WORDS["en"])["reply_prefix"]
    return f"{prefix} {stripped}" if stripped else prefix.rstrip(":").rstrip()


def _html_paragraphs(text: str) -> Markup:
    paragraphs = [p for p in text.replace("\r", "").split("\n\n") if p.strip()]
    return Markup("".join(
        f"<p>{Markup('<br>').join(escape(line) for line in p.splitlines())}</p>"
        for p in paragraphs))


class Templates:
    def __init__(self, override_dir: str | None = None) -> None:
        loaders = [FileSystemLoader(str(SHIPPED))]
        if override_dir:
            loaders.insert(0, FileSystemLoader(override_dir))
        self.env = Environment(
            loader=ChoiceLoader(loaders), undefined=StrictUndefined,
            autoescape=select_autoescape(enabled_extensions=("html.j2",),
                                         default_for_string=False),
            keep_trailing_newline=True)

    def names(self) -> set[str]:
        return {n.split(".")[0] for n in self.env.list_templates(extensions=["j2"])}

    def render(self, name: str, *, draft: str, language: str, sender_name: str,
               original_subject: str, thread_id: str, assistant_name: str,
               organisation: str, disclaimer: dict[str, str], now: datetime) -> Rendered:
        words = WORDS.get(language, WORDS["en"])
        first = sender_name.split()[0] if sender_name.strip() else ""
        data: dict[str, Any] = {
            "ai_response": draft.strip(), "ai_response_html": _html_paragraphs(draft),
            "sender_name": sender_name, "original_subject": original_subject,
            "response_date": now.strftime("%Y-%m-%d %H:%M UTC"), "thread_id": thread_id,
            "language": language, "assistant_name": assistant_name,
            "organisation": organisation,
            "greeting": words["greeting"].format(name=sender_name) if first
            else words["greeting_anonymous"],
            "closing": words["closing"], "disclaimer_label": words["disclaimer_label"],
            # the tenant's in the reply's language, else the shipped one in that language
            "disclaimer": disclaimer.get(language) or words["disclaimer"],
        }
        text = self.env.get_template(f"{name}.txt.j2").render(data)
        html = self.env.get_template(f"{name}.html.j2").render(data)
        return Rendered(subject=reply_subject(original_subject, language), text=text.strip()
                        + "\n", html=html)
