"""`postroom send` against a small in-test SMTP server (aiosmtpd) that keeps what it receives."""

from __future__ import annotations

import csv
import io
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session
from openpyxl import load_workbook
from pypdf import PdfReader


@dataclass
class Capture:
    envelopes: list[Envelope] = field(default_factory=list)
    refuse_rcpt: set[str] = field(default_factory=set)
    data_reply: str = "250 2.0.0 Ok: queued as TEST1"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if address in self.refuse_rcpt:
            return "550 5.1.1 No such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return self.data_reply

    def message(self) -> EmailMessage:
        [envelope] = self.envelopes
        msg = message_from_bytes(envelope.original_content or envelope.content,
                                 policy=default_policy)
        assert isinstance(msg, EmailMessage)
        return msg


@pytest.fixture
def smtp() -> Iterator[tuple[Capture, str]]:
    capture = Capture()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(capture, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield capture, f"127.0.0.1:{port}"
    finally:
        controller.stop()


def attachments(msg: EmailMessage) -> dict[str, tuple[str, bytes]]:
    return {part.get_filename(): (part.get_content_type(), part.get_payload(decode=True))
            for part in msg.iter_attachments()}


def test_demo_mail_carries_a_pdf_xlsx_and_csv_purchase_order(cli, smtp, tmp_path: Path) -> None:
    capture, server = smtp
    extra = tmp_path / "notes.txt"
    extra.write_text("deliver to gate 3\n")

    result = cli("send", "--server", server, "--demo", "--attach", str(extra),
                 "--message-id", "po-42@northwind.example")
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == "250 2.0.0 Ok: queued as TEST1"
    assert "Message-ID: <po-42@northwind.example>" in result.output

    [envelope] = capture.envelopes
    assert envelope.mail_from == "purchasing@northwind.example"
    assert envelope.rcpt_tos == ["orders+acme@intake.example.com"]
    msg = capture.message()
    assert msg["Message-ID"] == "<po-42@northwind.example>"
    assert msg["Subject"] == "Purchase order PO-2025-0042"
    assert "purchase order PO-2025-0042" in msg.get_body(("plain",)).get_content()

    files = attachments(msg)
    assert set(files) == {
        "notes.txt",
        "purchase-order-PO-2025-0042.pdf",
        "purchase-order-PO-2025-0042.xlsx",
        "purchase-order-PO-2025-0042.csv",
    }
    assert files["notes.txt"] == ("text/plain", b"deliver to gate 3\n")

    pdf_type, pdf = files["purchase-order-PO-2025-0042.pdf"]
    assert pdf_type == "application/pdf"
    text = PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    assert "Purchase order PO-2025-0042" in text and "NW-1001" in text

    xlsx_type, xlsx = files["purchase-order-PO-2025-0042.xlsx"]
    assert xlsx_type == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    sheet = load_workbook(io.BytesIO(xlsx)).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][:4] == ("line", "sku", "description", "quantity")
    assert rows[1][1] == "NW-1001"

    csv_type, csv_bytes = files["purchase-order-PO-2025-0042.csv"]
    assert csv_type == "text/csv"
    records = list(csv.DictReader(io.StringIO(csv_bytes.decode())))
    assert [r["sku"] for r in records] == ["NW-1001", "NW-2040", "NW-3300", "NW-7781"]
    assert records[0]["amount"] == "60.00"


def test_plain_mail_with_options(cli, smtp) -> None:
    capture, server = smtp
    result = cli("send", "-s", server, "--from", "a@example.net",
                 "--to", "x+acme@intake.example.com", "--to", "y+acme@intake.example.com",
                 "--subject", "Hello", "--body", "Hi there")
    assert result.exit_code == 0, result.output
    [envelope] = capture.envelopes
    assert envelope.rcpt_tos == ["x+acme@intake.example.com", "y+acme@intake.example.com"]
    msg = capture.message()
    assert msg["Subject"] == "Hello"
    assert msg.get_content().strip() == "Hi there"
    assert list(msg.iter_attachments()) == []
    assert msg["Message-ID"].startswith("<") and msg["Message-ID"].endswith(">")


def test_a_refused_mail_prints_the_reply_and_fails(cli, smtp) -> None:
    capture, server = smtp
    capture.data_reply = "554 5.6.0 Message rejected: no thanks"
    result = cli("send", "-s", server)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == "554 5.6.0 Message rejected: no thanks"


def test_every_recipient_refused(cli, smtp) -> None:
    capture, server = smtp
    capture.refuse_rcpt = {"nobody@intake.example.com"}
    result = cli("send", "-s", server, "--to", "nobody@intake.example.com")
    assert result.exit_code == 1
    assert "recipient nobody@intake.example.com refused: 550" in result.output
    assert result.output.strip().splitlines()[-1] == "550 5.1.1 No such mailbox here"
    assert capture.envelopes == []


@pytest.fixture
def tls_smtp() -> Iterator[tuple[Capture, str]]:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)

    def authenticator(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
        ok = auth_data.login == b"clerk" and auth_data.password == b"s3cret"
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd replies 535

    capture = Capture()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(capture, hostname="127.0.0.1", port=port, tls_context=context,
                            require_starttls=True, authenticator=authenticator,
                            auth_require_tls=True)
    controller.start()
    try:
        yield capture, f"127.0.0.1:{port}"
    finally:
        controller.stop()


def test_starttls_and_auth(cli, tls_smtp) -> None:
    capture, server = tls_smtp
    result = cli("send", "-s", server, "--starttls", "--insecure", "--user", "clerk",
                 "--password", "s3cret")
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("250 2.0.0 Ok: queued as TEST1")
    assert len(capture.envelopes) == 1

    result = cli("send", "-s", server, "--starttls", "--insecure", "--user", "clerk",
                 "--password", "wrong")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("535")

    result = cli("send", "-s", server, "--starttls")  # self-signed: verification fails
    assert result.exit_code == 1
    assert "error: TLS with " in result.output and "--insecure" in result.output

    result = cli("send", "-s", server)  # the server requires STARTTLS first
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("530")
    assert len(capture.envelopes) == 1


def test_no_server_is_one_clear_line(cli) -> None:
    with socket.socket() as reserved:  # bound, never listening: connections are refused
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        result = cli("send", "--server", f"127.0.0.1:{port}")
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"error: cannot connect to the SMTP server at 127.0.0.1:{port}: Connection refused"
    )


def test_missing_attachment_and_bad_server(cli, tmp_path: Path) -> None:
    result = cli("send", "--attach", str(tmp_path / "nope.pdf"))
    assert result.exit_code == 1
    assert f"cannot read attachment {tmp_path / 'nope.pdf'}" in result.output

    result = cli("send", "--server", "localhost:notaport")
    assert result.exit_code == 2
    assert "expected HOST:PORT" in result.output
