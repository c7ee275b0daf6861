"""ZIP: stored as-is and never unpacked; only its directory is checked."""

from __future__ import annotations

import io
import zipfile

from postroom_contracts import DocumentMetadata

from .metadata import error


def zip_metadata(data: bytes) -> DocumentMetadata:
    """A ZIP is stored as-is and never unpacked; only check that its directory is readable."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)):
            pass
    except Exception as exc:
        return error("unreadable ZIP", exc)
    return DocumentMetadata()
