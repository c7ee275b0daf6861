"""`postroom documents` against a stand-in for the attachment-extractor's HTTP API."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

DOCS = [
    {
        "document_id": "94d570ab-31b5-5117-8d6c-a988b6d65420", "tenant": "acme",
        "mail_key": "df87625babdbd92f4b8e6f674d028689", "index": 0,
        "filename": "purchase-order.pdf", "declared_content_type": "application/pdf",
        "sniffed_content_type": "application/pdf", "size": 2085, "supported": True,
        "metadata": {"pages": 1}, "created_at": "2026-11-21T20:00:55+00:00",
    },
    {
        "document_id": "131a3a99-a78d-5f37-b8ba-b813903be360", "tenant": "acme",
        "mail_key": "df87625babdbd92f4b8e6f674d028689", "index": 1,
        "filename": "notes.bin", "declared_content_type": "application/octet-stream",
        "sniffed_content_type": None, "size": 12, "supported": False,
        "metadata": {}, "created_at": "2026-11-21T20:00:55+00:00",
    },
]


class FakeExtractor:
    def __init__(self) -> None:
        self.queries: list[dict[str, list[str]]] = []
        self.status = 200
        self.body: object = DOCS


@pytest.fixture
def extractor() -> Iterator[tuple[FakeExtractor, str]]:
    fake = FakeExtractor()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path != "/documents":
                self.send_error(404)
                return
            fake.queries.append(parse_qs(url.query))
            data = json.dumps(fake.body).encode()
            self.send_response(fake.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_table_of_documents_with_filters(cli, extractor) -> None:
    fake, url = extractor
    result = cli("documents", "--url", url, "--tenant", "acme", "--mail-key",
                 "df87625babdbd92f4b8e6f674d028689", "--limit", "5")
    assert result.exit_code == 0, result.output
    assert fake.queries == [{"tenant": ["acme"], "mail_key": ["df87625babdbd92f4b8e6f674d028689"],
                             "limit": ["5"]}]
    header, first, second = result.output.strip().splitlines()
    assert header.split() == ["DOCUMENT", "TENANT", "MAIL", "KEY", "#", "FILENAME", "TYPE", "SIZE",
                              "SUPPORTED", "STORED", "AT"]
    assert first.split()[:7] == ["94d570ab-31b5-5117-8d6c-a988b6d65420", "acme",
                                 "df87625babdbd92f4b8e6f674d028689", "0", "purchase-order.pdf",
                                 "application/pdf", "2085"]
    assert "yes" in first
    # no sniffed type: the declared one is shown
    assert "application/octet-stream" in second and " no " in second


def test_json_output_is_the_api_answer(cli, extractor) -> None:
    _, url = extractor
    result = cli("documents", "--url", url, "--json")
    assert result.exit_code == 0
    assert json.loads(result.output) == DOCS


def test_no_documents(cli, extractor) -> None:
    fake, url = extractor
    fake.body = []
    result = cli("documents", "--url", url)
    assert result.exit_code == 0
    assert result.output.strip() == "no documents"


def test_api_error_is_reported(cli, extractor) -> None:
    fake, url = extractor
    fake.status = 503
    fake.body = {"title": "Not ready", "detail": "a dependency is unavailable"}
    result = cli("documents", "--url", url)
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"error: {url}/documents answered 503: a dependency is unavailable")


def test_unreachable_extractor_is_one_clear_line(cli) -> None:
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{reserved.getsockname()[1]}"
        result = cli("documents", "--url", url)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: cannot reach the attachment-extractor at {url}")
