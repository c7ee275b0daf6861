"""Real sample files and mails for attachment-extractor's tests (imported via conftest.py)."""

from __future__ import annotations

import io
import struct
import wave
import zipfile
import zlib
from email.message import EmailMessage
from typing import Any

import openpyxl
from pypdf import PdfReader, PdfWriter
from reportlab.pdfgen import canvas

from postroom_contracts import BlobRef, MailReceived, derive_event_id, mail_key


def pdf_bytes(*pages: str) -> bytes:
    """A real PDF (reportlab), one page per text."""
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer)
    for text in pages or ("Purchase order",):
        pdf.drawString(72, 720, text)
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def encrypted_pdf_bytes(password: str = "s3cret") -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes("Top secret order"))))
    writer.encrypt(user_password=password, owner_password=password + "-owner")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def xlsx_bytes(rows: list[list[Any]], sheets: tuple[str, ...] = ("Orders",)) -> bytes:
    book = openpyxl.Workbook()
    first = book.active
    first.title = sheets[0]
    for row in rows:
        first.append(row)
    for name in sheets[1:]:
        book.create_sheet(name)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


def png_bytes() -> bytes:
    """A valid 1x1 PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00\xff\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def wav_bytes(seconds: float = 0.5, rate: int = 8000) -> bytes:
    """A PCM WAV of silence, as a PBX attaches to a voicemail notification."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * int(seconds * rate))
    return out.getvalue()


CSV_TEXT = "sku,description,qty\nA-1,Widget,4\nB-2,\"Gadget, large\",10\nC-3,Gizmo,1\n"


def mail(
    *,
    text: str | None = "Please find our order attached.",
    html: str | None = None,
    attachments: list[dict[str, Any]] = (),  # type: ignore[assignment]
    message_id: str = "<po-1@supplier.example>",
    subject: str = "Purchase order",
    headers: dict[str, str] | None = None,
) -> bytes:
    """A mail as a client would send it; each attachment dict: data, maintype, subtype,
    filename, and optionally disposition / cid."""
    msg = EmailMessage()
    msg["From"] = "Supplier <orders@supplier.example>"
    msg["To"] = "orders+acme@intake.example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    for name, value in (headers or {}).items():
        msg[name] = value
    if text is not None:
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    elif html is not None:
        msg.set_content(html, subtype="html")
    for att in attachments:
        kwargs: dict[str, Any] = {"disposition": att.get("disposition", "attachment")}
        if att.get("filename") is not None:
            kwargs["filename"] = att["filename"]
        if att.get("cid"):
            kwargs["cid"] = att["cid"]
        if att["maintype"] == "text":
            msg.add_attachment(att["data"].decode() if isinstance(att["data"], bytes)
                               else att["data"], subtype=att["subtype"], **kwargs)
        else:
            msg.add_attachment(att["data"], maintype=att["maintype"], subtype=att["subtype"],
                               **kwargs)
    return msg.as_bytes()


def pdf_attachment(filename: str = "order.pdf", *pages: str) -> dict[str, Any]:
    return {"data": pdf_bytes(*pages), "maintype": "application", "subtype": "pdf",
            "filename": filename}


def received(raw: BlobRef, *, tenant: str = "acme", message_id: str = "<po-1@supplier.example>",
             actions: tuple[str, ...] = ("extract",)) -> MailReceived:
    key = mail_key(tenant, message_id)
    return MailReceived(
        event_id=derive_event_id(key, "mail.received"), tenant=tenant, mail_key=key,
        message_id=message_id, mailbox="orders", actions=list(actions),
        envelope_from="orders@supplier.example",
        recipients=[f"orders+{tenant}@intake.example.com"], header_from="orders@supplier.example",
        subject="Purchase order", size=raw.size, raw=raw,
    )
