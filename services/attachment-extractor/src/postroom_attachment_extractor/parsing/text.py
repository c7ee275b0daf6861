"""Text hygiene: bytes that look like text decoded, and text made safe to pass on."""

from __future__ import annotations

import codecs
import re

SNIFF_SAMPLE_BYTES = 64 * 1024

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean_text(value: str) -> str:
    """Text safe for JSON, PostgreSQL and terminals: no NUL/control chars, no lone surrogates."""
    value = _CONTROL.sub("", value)
    return value.encode("utf-8", "replace").decode("utf-8")


def decode_text(data: bytes) -> str | None:
    """The bytes as text if they look like text (UTF-8/16 with BOM, UTF-8, Windows-1252)."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            return None
    sample = data[:SNIFF_SAMPLE_BYTES]
    if b"\x00" in sample:
        return None
    try:
        codecs.getincrementaldecoder("utf-8-sig")().decode(sample, final=len(data) <= len(sample))
        return data.decode("utf-8-sig", "replace")
    except UnicodeDecodeError:
        pass
    controls = sum(1 for b in sample if b < 0x20 and b not in (9, 10, 12, 13))
    if controls > len(sample) // 100:
        return None
    return data.decode("cp1252", "replace")
