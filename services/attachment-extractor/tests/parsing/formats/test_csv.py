"""CSV metadata: header and record count, whatever the delimiter and encoding."""

from __future__ import annotations

import extractor_samples as samples

from postroom_attachment_extractor.handlers import parse_mail
from postroom_attachment_extractor.parsing.mediatypes import CSV


def test_csv_metadata_reads_semicolons_quotes_and_windows_1252() -> None:
    data = "Artikel;Menge;Bemerkung\r\nMüsli;2;\"a;b\"\r\n\r\nÄpfel;3;\r\n".encode("cp1252")
    raw = samples.mail(attachments=[{"data": data, "maintype": "application",
                                     "subtype": "octet-stream", "filename": "bestellung.csv"}])
    [doc] = parse_mail(raw).attachments
    assert doc.sniffed_type == CSV
    assert doc.metadata.header == ["Artikel", "Menge", "Bemerkung"]
    assert doc.metadata.rows == 2  # the empty line is not a row
