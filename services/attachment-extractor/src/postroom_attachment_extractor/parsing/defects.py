"""The defects of one mail: a bounded list of short, human-readable descriptions."""

from __future__ import annotations

from typing import Any

from .text import clean_text

MAX_DEFECTS = 100
MAX_DEFECT_CHARS = 300


class Defects:
    """What the parser (and our own checks) found wrong, at most ``MAX_DEFECTS`` entries of at
    most ``MAX_DEFECT_CHARS`` characters, each listed once."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.dropped = 0
        self.ignore: set[str] = set()  # names of parser defect classes not to report

    def add(self, text: str) -> None:
        if len(self.items) >= MAX_DEFECTS:
            self.dropped += 1
            return
        text = " ".join(clean_text(text).split())
        if len(text) > MAX_DEFECT_CHARS:
            text = text[: MAX_DEFECT_CHARS - 1] + "…"
        if text not in self.items:
            self.items.append(text)

    def of(self, where: str, defects: Any) -> None:
        """Add the ``email`` package's defect objects found at ``where``."""
        for defect in list(defects or ())[:MAX_DEFECTS]:
            detail = str(defect)
            name = type(defect).__name__
            if name in self.ignore:
                continue
            self.add(f"{where}: {name}: {detail}" if detail and detail != name else
                     f"{where}: {name}")

    def result(self) -> list[str]:
        if self.dropped:
            return [*self.items, f"{self.dropped} more defects not listed"]
        return list(self.items)
