"""A small purchase order as PDF, XLSX and CSV, made in-process for ``postroom send --demo``."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from decimal import Decimal

PO_NUMBER = "PO-2025-0042"
BUYER = "Northwind Trading Ltd"
SUPPLIER = "ACME GmbH"
CURRENCY = "EUR"
HEADER = ["line", "sku", "description", "quantity", "unit", "unit_price", "amount"]
LINES: tuple[tuple[str, str, int, str, Decimal], ...] = (
    ("NW-1001", "Steel bolts M8x40, zinc plated", 500, "pc", Decimal("0.12")),
    ("NW-2040", "Hex nuts M8, zinc plated", 500, "pc", Decimal("0.05")),
    ("NW-3300", "Cable ties 200 mm, black (100 pack)", 20, "pack", Decimal("3.90")),
    ("NW-7781", "Safety gloves, size L", 12, "pair", Decimal("6.50")),
)


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


def order_rows() -> list[list[object]]:
    rows: list[list[object]] = []
    for number, (sku, description, quantity, unit, price) in enumerate(LINES, start=1):
        rows.append([number, sku, description, quantity, unit, price, price * quantity])
    return rows


def order_total() -> Decimal:
    return sum((Decimal(str(row[6])) for row in order_rows()), Decimal("0"))


def purchase_order_csv() -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(HEADER)
    for row in order_rows():
        writer.writerow([f"{v:.2f}" if isinstance(v, Decimal) else v for v in row])
    return out.getvalue().encode()


def purchase_order_xlsx() -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    ws = wb.active
    ws.title = "Purchase order"
    ws.append(HEADER)
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for row in order_rows():
        ws.append([float(v) if isinstance(v, Decimal) else v for v in row])
    ws.append([None, None, "Total", None, None, CURRENCY, float(order_total())])
    for column, width in zip("ABCDEFG", (6, 10, 40, 10, 7, 11, 11), strict=True):
        ws.column_dimensions[column].width = width
    meta = wb.create_sheet("Order")
    for key, value in (("po_number", PO_NUMBER), ("buyer", BUYER), ("supplier", SUPPLIER),
                       ("currency", CURRENCY)):
        meta.append([key, value])
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def purchase_order_pdf() -> bytes:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    pdf = canvas.Canvas(out, pagesize=A4, invariant=True)  # invariant: same bytes every run
    pdf.setTitle(f"Purchase order {PO_NUMBER}")
    pdf.setAuthor(BUYER)
    _, height = A4
    y = height - 72
    pdf.setFont("Helvetica-Bold", 16)
    pdf.drawString(72, y, f"Purchase order {PO_NUMBER}")
    pdf.setFont("Helvetica", 10)
    y -= 24
    pdf.drawString(72, y, f"Buyer: {BUYER}    Supplier: {SUPPLIER}    Currency: {CURRENCY}")
    y -= 28
    columns = (72, 100, 160, 370, 420, 460, 510)
    pdf.setFont("Helvetica-Bold", 9)
    for x, title in zip(columns, HEADER, strict=True):
        pdf.drawString(x, y, title.replace("_", " "))
    pdf.setFont("Helvetica", 9)
    for row in order_rows():
        y -= 16
        for x, value in zip(columns, row, strict=True):
            pdf.drawString(x, y, f"{value:.2f}" if isinstance(value, Decimal) else str(value))
    y -= 24
    pdf.setFont("Helvetica-Bold", 10)
    pdf.drawString(columns[5], y, f"Total {order_total():.2f} {CURRENCY}")
    pdf.showPage()
    pdf.save()
    return out.getvalue()


def purchase_order_attachments() -> list[Attachment]:
    stem = f"purchase-order-{PO_NUMBER}"
    return [
        Attachment(f"{stem}.pdf", "application/pdf", purchase_order_pdf()),
        Attachment(
            f"{stem}.xlsx",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            purchase_order_xlsx(),
        ),
        Attachment(f"{stem}.csv", "text/csv", purchase_order_csv()),
    ]


DEMO_SUBJECT = f"Purchase order {PO_NUMBER}"
DEMO_BODY = (
    "Hello,\n\n"
    f"please find attached our purchase order {PO_NUMBER} ({len(LINES)} lines, "
    f"total {order_total():.2f} {CURRENCY}) as PDF, Excel and CSV.\n\n"
    f"Kind regards\n{BUYER} purchasing\n"
)
