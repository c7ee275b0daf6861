"""ZIP: stored as it is, never unpacked; a broken directory is a metadata error."""

from __future__ import annotations

import extractor_samples as samples

from postroom_attachment_extractor.handlers import parse_mail
from postroom_attachment_extractor.parsing.mediatypes import ZIP


def test_a_zip_without_its_directory_gives_a_metadata_error() -> None:
    raw = samples.mail(attachments=[
        {"data": b"PK\x03\x04" + b"\x00" * 40, "maintype": "application", "subtype": "zip",
         "filename": "cut.zip"},
    ])
    [cut_zip] = parse_mail(raw).attachments
    assert cut_zip.sniffed_type == ZIP and cut_zip.metadata.error
    assert cut_zip.metadata.error.startswith("unreadable ZIP")
