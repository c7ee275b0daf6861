"""``postroom documents``: documents stored by the attachment-extractor (its HTTP API)."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import typer

from .common import describe, echo_json, fail, table

DEFAULT_URL = "http://127.0.0.1:8026"

# Shown in this order when the API returns them; the first present of each alternative wins.
COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("document", ("document_id", "id")),
    ("tenant", ("tenant",)),
    ("mail key", ("mail_key",)),
    ("#", ("index",)),
    ("filename", ("filename",)),
    ("type", ("sniffed_content_type", "content_type", "declared_content_type")),
    ("size", ("size",)),
    ("supported", ("supported",)),
    ("stored at", ("stored_at", "created_at", "occurred_at")),
)


def _pick(doc: dict[str, Any], keys: tuple[str, ...]) -> object:
    for key in keys:
        if doc.get(key) is not None:
            return doc[key]
    return None


def document_rows(docs: list[dict[str, Any]]) -> tuple[list[str], list[list[object]]]:
    present = [(title, keys) for title, keys in COLUMNS if any(_pick(d, keys) is not None
                                                               for d in docs)]
    if not present:  # an API shape we do not know: show its scalar fields as they are
        keys = sorted({k for d in docs for k, v in d.items() if not isinstance(v, dict | list)})
        present = [(k, (k,)) for k in keys]
    return [t for t, _ in present], [[_pick(d, keys) for _, keys in present] for d in docs]


def documents(
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Only this tenant.")] = None,
    mail_key: Annotated[
        str | None, typer.Option("--mail-key", "-k", help="Only documents of this mail.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most N documents.")] = 50,
    url: Annotated[
        str,
        typer.Option("--url", help="HTTP address of the attachment-extractor."),
    ] = DEFAULT_URL,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON.")] = False,
) -> None:
    """List stored documents (attachments) as a table."""
    params: dict[str, str | int] = {"limit": limit}
    if tenant:
        params["tenant"] = tenant
    if mail_key:
        params["mail_key"] = mail_key
    endpoint = url.rstrip("/") + "/documents"
    try:
        # trust_env=False: a proxy from the environment must not intercept a loopback address
        response = httpx.get(endpoint, params=params, timeout=10.0, trust_env=False)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the attachment-extractor at {url}: {describe(exc)} "
             "(is `postroom up` running? set --url)")
    if response.status_code != 200:
        detail = response.text.strip()
        try:
            body = response.json()
            detail = body.get("detail") or body.get("title") or detail
        except ValueError:
            pass
        fail(f"{endpoint} answered {response.status_code}: {str(detail)[:300]}")
    try:
        body = response.json()
    except ValueError:
        fail(f"{endpoint} did not answer JSON")
    docs = body.get("documents", body.get("items")) if isinstance(body, dict) else body
    if not isinstance(docs, list):
        fail(f"{endpoint} answered an unexpected shape (expected a JSON list)")
    if as_json:
        echo_json(docs)
        return
    if not docs:
        typer.echo("no documents")
        return
    headers, rows = document_rows([d for d in docs if isinstance(d, dict)])
    typer.echo(table(headers, rows))
