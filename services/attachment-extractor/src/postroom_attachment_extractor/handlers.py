"""Pure extraction logic: raw MIME bytes in; body text, attachments and their metadata out.

No I/O framework here (no NATS, database or blob store), so every rule is testable with
plain bytes. Mail is hostile input, so:

- parsing never raises on malformed MIME: the parser's defects (and our own findings) are
  returned as strings;
- work is bounded: at most ``max_parts`` MIME parts are parsed and looked at (the parser
  stops reading after them), multiparts and attached messages are followed ``max_depth``
  levels deep, attachments larger than ``max_attachment_bytes`` are skipped, body text is
  cut at ``body_text_limit`` characters;
- filenames are sanitised (no path parts, no control characters, bounded length, never
  empty) before anyone sees them;
- content types are sniffed from the bytes, never trusted from the headers; ZIP archives are
  stored as-is and never unpacked (only their directory is read to tell XLSX from ZIP).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import logging
import mimetypes
import re
import unicodedata
import warnings
import zipfile
from dataclasses import dataclass, field
from email.feedparser import BytesFeedParser
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import EmailPolicy
from html.parser import HTMLParser
from typing import Any

import puremagic

from postroom_contracts import DocumentMetadata

# pypdf and openpyxl report every oddity of a file through logging / warnings; what matters
# to us ends up in the document's metadata instead.
logging.getLogger("pypdf").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", module=r"openpyxl(\..*)?$")

PDF = "application/pdf"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
XLSM = "application/vnd.ms-excel.sheet.macroenabled.12"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
CSV = "text/csv"
ZIP = "application/zip"
TEXT = "text/plain"
OCTET_STREAM = "application/octet-stream"
SUPPORTED_TYPES = frozenset({PDF, XLSX, CSV, ZIP})

_CSV_DECLARED = frozenset({
    "text/csv", "application/csv", "text/comma-separated-values", "text/x-csv",
    "text/tab-separated-values", "application/vnd.ms-excel",
})
_CSV_EXTENSIONS = (".csv", ".tsv")
_NOT_CSV_EXTENSIONS = (".txt", ".log", ".md", ".htm", ".html", ".xml", ".json", ".eml", ".ics")
_HTML_STARTS = ("<!doctype html", "<html", "<head", "<body", "<script", "<iframe", "<meta",
                "<!--")
_EXTENSIONS = {PDF: ".pdf", XLSX: ".xlsx", XLSM: ".xlsm", DOCX: ".docx", PPTX: ".pptx",
               CSV: ".csv", ZIP: ".zip", TEXT: ".txt", "message/rfc822": ".eml",
               "image/jpeg": ".jpg", OCTET_STREAM: ".bin"}

MAX_FILENAME_BYTES = 200
MAX_DEFECTS = 100
MAX_DEFECT_CHARS = 300
MAX_REFERENCES = 100
MAX_HEADER_CHARS = 998
MAX_PARSED_HEADER_CHARS = 8192
MAX_PDF_TEXT_PAGES = 20
MAX_SHEETS = 100
MAX_HEADER_CELLS = 100
MAX_CELL_CHARS = 200
MAX_SHEET_ROWS_SCANNED = 200_000  # rows read (empty ones too) before giving up on a count
MAX_SHEET_COLUMNS_SCANNED = 256
MAX_UNPACKED_WORKBOOK_BYTES = 256 * 1024 * 1024
SNIFF_SAMPLE_BYTES = 64 * 1024
CSV_SNIFF_CHARS = 16 * 1024
PARSE_CHUNK_BYTES = 8192
HTML_INPUT_FACTOR = 20  # HTML read per character of text wanted


@dataclass(frozen=True)
class Limits:
    max_parts: int = 200
    max_depth: int = 10
    max_attachment_bytes: int = 26_214_400
    include_inline: bool = False
    body_text_limit: int = 65_536
    text_excerpt_chars: int = 2_000


@dataclass
class Attachment:
    """One file attachment, ready to be stored as a document."""

    index: int
    filename: str
    declared_type: str
    sniffed_type: str | None
    data: bytes = field(repr=False)
    supported: bool
    metadata: DocumentMetadata
    part: str  # MIME section number, e.g. "1.2"

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class ParsedMail:
    body_text: str = ""
    body_text_truncated: bool = False
    has_html: bool = False
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    skipped_parts: int = 0
    defects: list[str] = field(default_factory=list)


# --- parsing policy -------------------------------------------------------------------------


class _BoundedPolicy(EmailPolicy):
    """``policy.default``, except that a header is parsed from its first
    ``MAX_PARSED_HEADER_CHARS`` characters only: the header registry's cost grows much faster
    than a header's length (40,000 encoded words in one Subject took 10 GB and 14 s)."""

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if len(value) > MAX_PARSED_HEADER_CHARS:
            value = value[:MAX_PARSED_HEADER_CHARS]
        return super().header_fetch_parse(name, value)


MAIL_POLICY = _BoundedPolicy()


# --- text hygiene ---------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean_text(value: str) -> str:
    """Text safe for JSON, PostgreSQL and terminals: no NUL/control chars, no lone surrogates."""
    value = _CONTROL.sub("", value)
    return value.encode("utf-8", "replace").decode("utf-8")


class _Defects:
    """A bounded list of human-readable defect descriptions."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.dropped = 0
        self.ignore: set[str] = set()

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


# --- filenames ------------------------------------------------------------------------------

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


def extension_for(content_type: str | None) -> str:
    if not content_type:
        return ".bin"
    ext = _EXTENSIONS.get(content_type) or mimetypes.guess_extension(content_type, strict=False)
    return ext or ".bin"


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


# --- content sniffing -----------------------------------------------------------------------


def _zip_type(data: bytes) -> str:
    """XLSX, DOCX and friends are ZIP containers: tell them apart by their directory."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            if "mimetype" in names:  # OpenDocument
                with archive.open("mimetype") as fh:
                    declared = fh.read(200).decode("ascii", "replace").strip()
                if re.fullmatch(r"application/vnd\.oasis\.opendocument\.[a-z.-]+", declared):
                    return declared
            if "[Content_Types].xml" in names:
                with archive.open("[Content_Types].xml") as fh:
                    types = fh.read(1024 * 1024).decode("utf-8", "replace").lower()
                if "spreadsheetml.sheet.main+xml" in types:
                    return XLSX
                if "sheet.macroenabled.main+xml" in types:
                    return XLSM
                if any(n.startswith("xl/") for n in names):
                    return XLSX
                if any(n.startswith("word/") for n in names):
                    return DOCX
                if any(n.startswith("ppt/") for n in names):
                    return PPTX
    except Exception:  # a damaged archive is still a ZIP by its signature
        return ZIP
    return ZIP


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


def _csv_dialect(sample: str) -> type[csv.Dialect] | csv.Dialect:
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        first = sample.split("\n", 1)[0]
        if "\t" in first:
            return csv.excel_tab
        if first.count(";") > first.count(","):

            class Semicolon(csv.excel):
                delimiter = ";"

            return Semicolon
        return csv.excel


def _looks_tabular(text: str) -> bool:
    sample = text[:CSV_SNIFF_CHARS]
    if "\n" in sample and len(text) > CSV_SNIFF_CHARS:
        sample = sample.rsplit("\n", 1)[0]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
        rows = [r for r in csv.reader(io.StringIO(sample), dialect) if any(c.strip() for c in r)]
    except csv.Error:
        return False
    rows = rows[:50]
    if len(rows) < 3 or len(rows[0]) < 2:
        return False
    same = sum(1 for r in rows if len(r) == len(rows[0]))
    return same >= 0.9 * len(rows)


def sniff_content_type(data: bytes, declared: str = OCTET_STREAM, filename: str = "") -> str | None:
    """What the bytes are, whatever the headers claim. None for an empty attachment."""
    if not data:
        return None
    if b"%PDF-" in data[:1024]:
        return PDF
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return _zip_type(data)
    text = decode_text(data)
    if text is not None:
        name = filename.lower()
        if declared in _CSV_DECLARED or name.endswith(_CSV_EXTENSIONS):
            return CSV
        start = text[:512].lstrip("\ufeff \t\r\n").lower()
        if start.startswith(_HTML_STARTS):
            return "text/html"
        if start.startswith("<svg") or (start.startswith("<?xml") and "<svg" in start):
            return "image/svg+xml"
        if not name.endswith(_NOT_CSV_EXTENSIONS) and _looks_tabular(text):
            return CSV
        try:
            found = puremagic.from_string(data[:SNIFF_SAMPLE_BYTES], mime=True)
        except Exception:
            found = ""
        if found and (found.startswith("text/") or found.endswith(("xml", "json", "rtf"))):
            return str(found)
        return TEXT
    try:
        found = puremagic.from_string(data, mime=True)
    except Exception:
        found = ""
    return str(found) if found else OCTET_STREAM


# --- metadata -------------------------------------------------------------------------------


def _error(kind: str, exc: BaseException) -> DocumentMetadata:
    detail = clean_text(str(exc))[:200]
    suffix = f": {detail}" if detail else ""
    return DocumentMetadata(error=f"{kind}: {type(exc).__name__}{suffix}")


def _cells(values: Any) -> list[str]:
    cells = ["" if v is None else clean_text(str(v))[:MAX_CELL_CHARS] for v in values]
    while cells and not cells[-1].strip():
        cells.pop()
    return cells[:MAX_HEADER_CELLS]


def pdf_metadata(data: bytes, excerpt_chars: int) -> DocumentMetadata:
    """Page count and the beginning of the text; an unreadable PDF gives ``error``."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")
            except Exception:
                opened = 0
            if not opened:
                return DocumentMetadata(error="encrypted PDF: a password is needed")
        pages = len(reader.pages)
    except Exception as exc:
        return _error("unreadable PDF", exc)
    text: list[str] = []
    size = 0
    error = None
    for number in range(min(pages, MAX_PDF_TEXT_PAGES)):
        if size >= excerpt_chars:
            break
        try:
            chunk = (reader.pages[number].extract_text() or "").strip()
        except Exception as exc:
            error = _error(f"text of page {number + 1} unreadable", exc).error
            break
        text.append(chunk)
        size += len(chunk)
    excerpt = clean_text("\n".join(text)).strip()[:excerpt_chars]
    return DocumentMetadata(pages=pages, text_excerpt=excerpt or None, error=error)


def xlsx_metadata(data: bytes) -> DocumentMetadata:
    """Sheet names; header and data-row count of the first sheet."""
    import openpyxl

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
        if unpacked > MAX_UNPACKED_WORKBOOK_BYTES:
            return DocumentMetadata(error=f"workbook unpacks to {unpacked} bytes: not opened")
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:
        return _error("unreadable XLSX", exc)
    try:
        sheets = [clean_text(str(name))[:MAX_CELL_CHARS] for name in book.sheetnames][:MAX_SHEETS]
        header: list[str] | None = None
        rows: int | None = 0
        if book.worksheets:
            sheet = book.worksheets[0]
            sheet.reset_dimensions()  # a forged <dimension> must not make rows 16384 cells wide
            scanned = 0
            for values in sheet.iter_rows(values_only=True, max_col=MAX_SHEET_COLUMNS_SCANNED):
                scanned += 1
                if scanned > MAX_SHEET_ROWS_SCANNED:
                    rows = None  # too long to count within our budget
                    break
                if not any(v is not None and str(v).strip() for v in values):
                    continue
                if header is None:
                    header = _cells(values)
                else:
                    rows = (rows or 0) + 1
        return DocumentMetadata(sheets=sheets, header=header, rows=rows)
    except Exception as exc:
        return _error("unreadable XLSX", exc)
    finally:
        book.close()


def csv_metadata(data: bytes) -> DocumentMetadata:
    """Header (first record) and the number of data records after it."""
    text = decode_text(data)
    if text is None:
        return DocumentMetadata(error="CSV is not text")
    dialect = _csv_dialect(text[:CSV_SNIFF_CHARS])
    header: list[str] | None = None
    rows = 0
    try:
        for record in csv.reader(io.StringIO(text, newline=""), dialect):
            if not any(cell.strip() for cell in record):
                continue
            if header is None:
                header = _cells(record)
            else:
                rows += 1
    except csv.Error as exc:
        return DocumentMetadata(header=header, rows=rows, error=_error("CSV", exc).error)
    return DocumentMetadata(header=header, rows=rows)


def zip_metadata(data: bytes) -> DocumentMetadata:
    """A ZIP is stored as-is and never unpacked; only check that its directory is readable."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)):
            pass
    except Exception as exc:
        return _error("unreadable ZIP", exc)
    return DocumentMetadata()


def document_metadata(data: bytes, sniffed: str | None, limits: Limits) -> DocumentMetadata:
    try:
        if sniffed == PDF:
            return pdf_metadata(data, limits.text_excerpt_chars)
        if sniffed == XLSX:
            return xlsx_metadata(data)
        if sniffed == CSV:
            return csv_metadata(data)
        if sniffed == ZIP:
            return zip_metadata(data)
    except Exception as exc:  # RecursionError in a hostile PDF, anything a library throws
        return _error("metadata unreadable", exc)
    return DocumentMetadata()


# --- body text ------------------------------------------------------------------------------


class _HTMLText(HTMLParser):
    """Text of an HTML body: tags stripped, scripts and styles dropped, blocks on new lines."""

    BLOCKS = frozenset({"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6",
                        "table", "ul", "ol", "blockquote", "pre", "hr", "section", "article",
                        "header", "footer", "dt", "dd"})
    SKIP = frozenset({"script", "style", "template", "noscript"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCKS:
            self.chunks.append("\n")
        elif tag == "td":
            self.chunks.append("\t")

    def handle_startendtag(self, tag: str, attrs: Any) -> None:
        if tag in self.BLOCKS:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.BLOCKS:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.chunks.append(data)


def html_to_text(html: str) -> str:
    parser = _HTMLText()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # keep whatever was read before the parser gave up
        pass
    lines = (" ".join(line.split()) for line in "".join(parser.chunks).splitlines())
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _part_text(part: Message, defects: _Defects, where: str) -> str:
    try:
        payload = part.get_payload(decode=True)
    except Exception as exc:
        defects.add(f"{where}: body undecodable: {type(exc).__name__}")
        return ""
    if not isinstance(payload, bytes):
        return ""
    charset = _safe(lambda: part.get_content_charset(), None) or "us-ascii"
    try:
        codecs.lookup(charset)
    except LookupError:
        defects.add(f"{where}: unknown charset {charset[:40]!r}")
        charset = "utf-8"
    for candidate in (charset, "utf-8"):
        try:
            return payload.decode(candidate)
        except (UnicodeDecodeError, LookupError):
            continue
    return payload.decode("cp1252" if charset in ("us-ascii", "ascii") else charset, "replace")


# --- the walk -------------------------------------------------------------------------------


def _safe(call: Any, default: Any) -> Any:
    try:
        return call()
    except Exception:
        return default


def _raw_header(msg: Message, name: str) -> str | None:
    """A header's raw value, unfolded, without the header registry (threading headers are
    read with a regular expression: a long References header is normal)."""
    for key, value in _safe(msg.raw_items, []):
        if str(key).lower() == name.lower() and isinstance(value, str):
            return " ".join(clean_text(value).split())
    return None


_MSG_ID = re.compile(r"<[^<>\s]{1,250}>")


def _in_reply_to(msg: Message) -> str | None:
    value = _raw_header(msg, "In-Reply-To")
    if not value:
        return None
    found = _MSG_ID.search(value)
    return found.group(0) if found else value[:MAX_HEADER_CHARS]


def _filename(part: Message) -> str | None:
    name = _safe(part.get_filename, None)
    if name is None:
        # the header-registry parser gave up on the parameter: read it the lenient way
        raw = _safe(lambda: part.get_param("filename", header="content-disposition"), None) \
            or _safe(lambda: part.get_param("name"), None)
        if isinstance(raw, tuple):
            raw = _safe(lambda: raw[2].encode("latin-1").decode(raw[0] or "utf-8", "replace"),
                        raw[2])
        name = raw if isinstance(raw, str) else None
    return name or None


def _is_attachment(ctype: str, disposition: str | None, filename: str | None,
                   has_cid: bool) -> str:
    """'body', 'inline-image', 'attachment' or 'ignore' for one leaf part."""
    maintype = ctype.split("/", 1)[0]
    if ctype in ("text/plain", "text/html") and disposition != "attachment" and not (
        filename and disposition is None
    ):
        return "body"
    if maintype == "image" and disposition != "attachment" and (
        disposition == "inline" or has_cid or not filename
    ):
        return "inline-image"
    if disposition == "attachment" or filename or maintype != "text":
        return "attachment"
    return "ignore"


def _long_headers(part: Message, where: str, defects: _Defects) -> None:
    for name, value in _safe(part.raw_items, []):
        if isinstance(value, str) and len(value) > MAX_PARSED_HEADER_CHARS:
            defects.add(f"{where}: header {clean_text(str(name))[:60]} is {len(value)} "
                        f"characters long: only the first {MAX_PARSED_HEADER_CHARS} were read")


def _root_defects(msg: Message, defects: _Defects) -> None:
    defects.of("message", msg.defects)
    _long_headers(msg, "message", defects)
    for name in list(_safe(msg.keys, []))[:100]:
        value = _safe(lambda n=name: msg[n], None)
        defects.of(f"header {clean_text(str(name))[:60]}", getattr(value, "defects", ()))


def _parse_bounded(raw: bytes, max_parts: int) -> tuple[Message, bool]:
    """Parse with (bounded) ``policy.default``, but stop reading once more than
    ``max_parts`` parts exist (a part bomb would otherwise cost seconds per megabyte in
    header parsing).

    Parts are created in document order, the order the walk visits them, so every part
    the walk may use is complete when we stop. Returns the message and whether input was
    left unread.
    """
    created = 0

    def factory(policy: Any = None) -> Message:  # the parser passes its policy
        nonlocal created
        created += 1
        return EmailMessage(policy=policy)

    parser = BytesFeedParser(_factory=factory, policy=MAIL_POLICY)
    created = 0  # the parser probes the factory once
    view = memoryview(raw)
    for start in range(0, len(raw), PARSE_CHUNK_BYTES):
        parser.feed(bytes(view[start: start + PARSE_CHUNK_BYTES]))
        if created > max_parts + 1 and start + PARSE_CHUNK_BYTES < len(raw):
            return parser.close(), True
    return parser.close(), False


def parse_mail(raw: bytes, limits: Limits = Limits()) -> ParsedMail:
    """Parse one mail; never raises on malformed MIME (see the module docstring)."""
    defects = _Defects()
    result = ParsedMail()
    try:
        msg, cut = _parse_bounded(raw, limits.max_parts)
        walkable = True
        if cut:  # the walk reports the part limit; unclosed multiparts are our doing
            defects.ignore.add("CloseBoundaryNotFoundDefect")
    except RecursionError:
        defects.add("MIME structure nested too deeply to parse: only the headers were read")
        msg = BytesParser(policy=MAIL_POLICY).parsebytes(raw, headersonly=True)
        walkable = False
    _root_defects(msg, defects)
    result.in_reply_to = _in_reply_to(msg)
    refs = _MSG_ID.findall(_raw_header(msg, "References") or "")
    # the first (thread root) and the most recent ones
    result.references = refs if len(refs) <= MAX_REFERENCES else (
        refs[:1] + refs[-(MAX_REFERENCES - 1):])

    plain: list[str] = []
    html: list[str] = []
    plain_size = html_size = 0
    text_dropped = False
    attachments: list[Attachment] = []
    # (part, depth, section number, inside an attached message)
    stack: list[tuple[Message, int, str, bool]] = [(msg, 0, "1", False)] if walkable else []
    seen = 0
    while stack:
        part, depth, where, embedded = stack.pop()
        seen += 1
        if seen > limits.max_parts:
            defects.add(f"more than {limits.max_parts} MIME parts: the rest were skipped")
            result.skipped_parts += 1 + len(stack)
            break
        if part is not msg:
            defects.of(f"part {where}", getattr(part, "defects", ()))
            _long_headers(part, f"part {where}", defects)
        ctype = _safe(part.get_content_type, "application/octet-stream")
        children = _safe(part.get_payload, None) if _safe(part.is_multipart, False) else None
        if ctype.startswith("multipart/") and not isinstance(children, list):
            defects.add(f"part {where}: {ctype} without readable parts: skipped")
            result.skipped_parts += 1
            continue
        if isinstance(children, list):
            if depth >= limits.max_depth:
                defects.add(f"part {where}: nested deeper than {limits.max_depth} levels: "
                            "skipped")
                result.skipped_parts += 1
                continue
            inside = embedded or ctype.startswith("message/")
            for number in range(len(children), 0, -1):
                child = children[number - 1]
                if isinstance(child, Message):
                    stack.append((child, depth + 1, f"{where}.{number}", inside))
            continue
        disposition = _safe(part.get_content_disposition, None)
        filename = _filename(part)
        has_cid = _safe(lambda p=part: p.get("Content-ID") is not None, False)
        kind = _is_attachment(ctype, disposition, filename, has_cid)
        if kind == "body":
            if embedded:
                continue  # the text of an attached message is not this mail's body
            if ctype == "text/plain":
                if plain_size < limits.body_text_limit:
                    text = _part_text(part, defects, f"part {where}")
                    plain.append(text)
                    plain_size += len(text)
                else:
                    text_dropped = True
            elif ctype == "text/html":
                result.has_html = True
                if plain:
                    continue
                if html_size < limits.body_text_limit * HTML_INPUT_FACTOR:
                    text = _part_text(part, defects, f"part {where}")
                    html.append(text)
                    html_size += len(text)
                else:
                    text_dropped = True
            continue
        if kind == "ignore":
            continue
        if kind == "inline-image" and not limits.include_inline:
            result.skipped_parts += 1
            continue
        try:
            attachment = _attachment(part, where, len(attachments), ctype, filename, limits,
                                     defects)
        except Exception as exc:  # a safety net: one odd part must not cost the whole mail
            defects.add(f"part {where}: could not be read ({type(exc).__name__}): skipped")
            attachment = None
        if attachment is None:
            result.skipped_parts += 1
        else:
            attachments.append(attachment)

    result.attachments = attachments
    result.body_text, truncated = _body(plain, html, limits.body_text_limit)
    result.body_text_truncated = truncated or (text_dropped and bool(result.body_text))
    result.defects = defects.result()
    return result


def _body(plain: list[str], html: list[str], limit: int) -> tuple[str, bool]:
    if plain:
        text = "\n\n".join(t.strip("\r\n") for t in plain)
        text = text.replace("\r\n", "\n")
    elif html:
        cut = False
        source = "\n".join(html)
        if len(source) > limit * HTML_INPUT_FACTOR:
            source, cut = source[: limit * HTML_INPUT_FACTOR], True
        text = html_to_text(source)
        if cut:
            return clean_text(text)[:limit], True
    else:
        return "", False
    text = clean_text(text)
    if len(text) > limit:
        return text[:limit], True
    return text, False


def _attachment(part: Message, where: str, index: int, declared: str, raw_name: str | None,
                limits: Limits, defects: _Defects) -> Attachment | None:
    name_for_defect = safe_filename(raw_name, index, declared)
    encoded = _safe(lambda: part.get_payload(decode=False), "")
    if isinstance(encoded, str) and len(encoded) > 2 * limits.max_attachment_bytes + 4096:
        # even the most wasteful encoding cannot shrink this under the limit: don't decode it
        defects.add(f"part {where}: attachment {name_for_defect!r} larger than "
                    f"{limits.max_attachment_bytes} bytes: skipped")
        return None
    try:
        data = part.get_payload(decode=True)
    except Exception as exc:
        defects.add(f"part {where}: attachment {name_for_defect!r} undecodable "
                    f"({type(exc).__name__}): skipped")
        return None
    if not isinstance(data, bytes):
        data = b""
    if len(data) > limits.max_attachment_bytes:
        defects.add(f"part {where}: attachment {name_for_defect!r} is {len(data)} bytes, more "
                    f"than {limits.max_attachment_bytes}: skipped")
        return None
    declared = declared[:255]
    sniffed = sniff_content_type(data, declared, raw_name or "")
    filename = safe_filename(raw_name, index, sniffed or declared)
    return Attachment(
        index=index,
        filename=filename,
        declared_type=declared,
        sniffed_type=sniffed,
        data=data,
        supported=sniffed in SUPPORTED_TYPES,
        metadata=document_metadata(data, sniffed, limits),
        part=where,
    )


__all__ = [
    "CSV", "PDF", "SUPPORTED_TYPES", "XLSX", "ZIP", "Attachment", "Limits",
    "ParsedMail", "clean_text", "csv_metadata", "decode_text", "document_metadata",
    "extension_for", "html_to_text", "parse_mail", "pdf_metadata", "safe_filename",
    "sniff_content_type", "xlsx_metadata", "zip_metadata",
]
