"""Attachment filenames made safe to show, store and offer for download."""

from __future__ import annotations

import re
import unicodedata
from email.header import decode_header, make_header

from .mediatypes import extension_for

MAX_FILENAME_BYTES = 200

_WINDOWS_RESERVED = re.compile(r'[<>:"|?*]')
_WINDOWS_DEVICES = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"COM{i}" for i in range(10)} | {f"LPT{i}" for i in range(10)}
)
_DROP_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _decode_name(name: str) -> str:
    """Undo RFC 2047 encoded words and raw 8-bit bytes a lenient sender left in a name."""
    if "=?" in name and "?=" in name:
        try:
            name = str(make_header(decode_header(name)))
        except Exception:  # unknown charset, broken encoding: keep the text as it is
            pass
    if any("\udc80" <= ch <= "\udcff" for ch in name):  # surrogate-escaped 8-bit bytes
        raw = name.encode("utf-8", "surrogateescape")
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            name = raw.decode("cp1252", "replace")
    return name


def _cut_utf8(text: str, limit: int) -> str:
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def safe_filename(raw: str | None, index: int, content_type: str | None = None) -> str:
    """A filename safe to show, store and offer for download; never empty.

    Path parts (``../``, ``C:\\``), control and format characters (NUL, bidi overrides),
    characters Windows rejects and leading dots are removed; the length is bounded (the
    extension is kept); an empty result becomes ``attachment-<index><ext>``.
    """
    name = _decode_name(raw or "")
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch) not in _DROP_CATEGORIES)
    name = _WINDOWS_RESERVED.sub("_", name)
    name = " ".join(name.split())
    name = name.rstrip(". ")
    if name.startswith("."):
        name = f"attachment-{index}{name}" if name.strip(".") else ""
    if len(name.encode("utf-8")) > MAX_FILENAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        if dot and stem and 0 < len(ext.encode("utf-8")) <= 16:
            keep = MAX_FILENAME_BYTES - len(ext.encode("utf-8")) - 1
            name = f"{_cut_utf8(stem, keep).rstrip('. ')}.{ext}"
        else:
            name = _cut_utf8(name, MAX_FILENAME_BYTES).rstrip(". ")
    if name.split(".", 1)[0].upper() in _WINDOWS_DEVICES:
        name = f"_{name}"
    if not name:
        name = f"attachment-{index}{extension_for(content_type)}"
    return name
