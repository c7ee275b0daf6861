"""Word error rate with a normaliser that reads numbers, times and spelling alike.

"at 3:30 pm", "at three thirty p.m." and "At three-thirty PM" all become
``at three thirty p m``; "555-0142" and "five five five zero one four two" agree digit by
digit. Scoring is ``jiwer`` on the normalised words.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import jiwer
from num2words import num2words

_DIGITS = "zero one two three four five six seven eight nine".split()
_HOURS = [*_DIGITS[1:], "ten", "eleven", "twelve", "fifteen", "thirty", "forty five"]
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b")
# "3:30", and "3.30" as speech models write it (a price "3.50" reads the same way)
_TIME = re.compile(r"\b(\d{1,2})[:.](\d{2})\b")
_PHONE = re.compile(r"\b\d{3,}(?:[-.\s]\d{2,})+\b")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _number(text: str) -> str:
    if "." in text:
        whole, frac = text.split(".", 1)
        return f"{num2words(int(whole))} point " + " ".join(_DIGITS[int(d)] for d in frac)
    value = int(text)
    if (len(text) > 1 and text.startswith("0")) or len(text) >= 5:
        return " ".join(_DIGITS[int(d)] for d in text)  # codes, phone numbers: digit by digit
    return num2words(value)


def _time(match: re.Match[str]) -> str:
    hours, minutes = int(match.group(1)), int(match.group(2))
    if minutes == 0:
        return num2words(hours)
    if minutes < 10:
        return f"{num2words(hours)} oh {num2words(minutes)}"
    return f"{num2words(hours)} {num2words(minutes)}"


def normalise(text: str) -> str:
    text = text.lower().replace("\u2019", "'")
    text = _TIME.sub(_time, text)
    text = _PHONE.sub(lambda m: " ".join(_DIGITS[int(d)] for d in re.sub(r"\D", "", m[0])),
                      text)
    text = _ORDINAL.sub(lambda m: num2words(int(m.group(1)), to="ordinal"), text)
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)
    text = _NUMBER.sub(lambda m: f" {_number(m[0])} ", text)
    text = text.replace("%", " percent ").replace("&", " and ")
    text = re.sub("[-\u2010\u2013\u2014/]", " ", text)
    text = re.sub(r"\boh\b", "zero", text)
    # "pm", "p.m." and "p m" alike; "am" only after a number ("I am" stays)
    text = re.sub(r"\bp\.?\s?m\b\.?", "p m", text)
    text = re.sub(r"\b(" + "|".join(_HOURS) + r")\s+a\.?\s?m\b\.?", r"\1 a m", text)
    text = re.sub(r"\bo'clock\b", "", text)
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    text = re.sub(r"'s\b", "s", text)
    text = text.replace("'", "")
    return " ".join(text.split())


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER (errors over all reference words) after :func:`normalise`."""
    refs = [normalise(r) or "<empty>" for r in references]
    hyps = [normalise(h) for h in hypotheses]
    return float(jiwer.wer(refs, hyps))
