"""mailbox-sync's HTTP API (beside the runtime's /health, /health/ready, /metrics).

``/api/v1/accounts``          list, add, show, change (PATCH), remove accounts;
                              ``.../sync`` polls now.
                              Bearer token (``MAILBOX_SYNC_API_TOKEN``, or its file).
``/api/v1/inbound/{tenant}/{mailbox}``  raw MIME (``message/rfc822``), HMAC-SHA256 signed
                              as cloud inbound-parse services sign (secret per tenant/mailbox).
Errors are RFC 9457 (7807) problem documents.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from postroom_runtime import problem

from .accounts import ENV_ACCOUNT, AccountExists, AccountInvalid, AccountService
from .config import MailboxSyncSettings
from .handlers import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AccountIn,
    AccountPatch,
    check_signature,
)
from .ingest import Ingestor, Unroutable

log = logging.getLogger("postroom_mailbox_sync")


class ApiProblem(Exception):
    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


def add_routes(app: FastAPI, service: AccountService, ingestor: Ingestor,
               settings: MailboxSyncSettings, token: str | None) -> None:
    @app.exception_handler(ApiProblem)
    async def _problem(_: Request, exc: ApiProblem) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        response = problem(exc.status, exc.title, exc.detail)
        if headers:
            response.headers.update(headers)
        return response

    def authorized(request: Request) -> None:
        if token is None:
            raise ApiProblem(503, "API disabled", "no MAILBOX_SYNC_API_TOKEN is configured")
        header = request.headers.get("authorization", "")
        presented = header[7:].strip() if header.lower().startswith("bearer ") else \
            request.headers.get("x-api-key", "")
        if not presented or not hmac.compare_digest(presented.encode(), token.encode()):
            raise ApiProblem(401, "Unauthorized", "a valid token is required "
                             "(Authorization: Bearer <MAILBOX_SYNC_API_TOKEN>)")

    router = APIRouter(prefix="/api/v1/accounts", dependencies=[Depends(authorized)])

    def shown(account_id: str) -> dict[str, Any]:
        account = service.accounts.get(account_id)
        body: dict[str, Any] = account.public() if account is not None else {"id": account_id}
        body["status"] = service.status(account_id)
        return body

    @router.get("")
    async def list_accounts() -> dict[str, Any]:
        ids = sorted({*service.accounts, *service.errors})
        return {"accounts": [shown(i) for i in ids]}

    @router.post("", status_code=201)
    async def add_account(data: AccountIn) -> dict[str, Any]:
        try:
            account = await service.add(data)
        except AccountExists as exc:
            raise ApiProblem(409, "Conflict", str(exc)) from None
        return shown(account.id)

    @router.get("/{account_id}")
    async def get_account(account_id: str) -> dict[str, Any]:
        if account_id not in service.accounts and account_id not in service.errors:
            raise ApiProblem(404, "Not found", f"no account {account_id!r}")
        return shown(account_id)

    @router.patch("/{account_id}")
    async def change_account(account_id: str, patch: AccountPatch) -> dict[str, Any]:
        try:
            account = await service.update(account_id, patch)
        except AccountExists as exc:
            raise ApiProblem(409, "Conflict", str(exc)) from None
        except AccountInvalid as exc:
            raise ApiProblem(422, "Invalid account", str(exc)) from None
        if account is None:
            raise ApiProblem(404, "Not found", f"no account {account_id!r}")
        return shown(account.id)

    @router.post("/{account_id}/sync", status_code=202)
    async def sync_now(account_id: str) -> dict[str, str]:
        if not service.wake(account_id):
            raise ApiProblem(404, "Not found", f"no running IMAP account {account_id!r}")
        return {"status": "sync requested"}

    @router.delete("/{account_id}", status_code=204)
    async def remove_account(account_id: str) -> Response:
        if account_id == ENV_ACCOUNT:
            raise ApiProblem(409, "Conflict", "the account 'env' is configured by the "
                             "environment (IMAP_HOST, ...): unset those to remove it")
        if not await service.remove(account_id):
            raise ApiProblem(404, "Not found", f"no account {account_id!r}")
        return Response(status_code=204)

    app.include_router(router)

    secrets = settings.inbound_secrets

    @app.post("/api/v1/inbound/{tenant}/{mailbox}", status_code=202)
    async def inbound(tenant: str, mailbox: str, request: Request) -> Any:
        """Raw MIME in the body (``Content-Type: message/rfc822``), signed:
        ``X-Postroom-Timestamp: <unix time>`` and ``X-Postroom-Signature: sha256=<hex>``,
        the HMAC-SHA256 of ``<timestamp>.<body>`` with the tenant's (or mailbox's) secret."""
        tenant, mailbox = tenant.lower(), mailbox.lower()
        secret = secrets.get((tenant, mailbox)) or secrets.get((tenant, "*"))
        if secret is None:
            raise ApiProblem(404, "Not found", f"no inbound-parse secret for {tenant}/{mailbox}")
        size = int(request.headers.get("content-length") or 0)
        if size > settings.mailbox_sync_inbound_max_bytes:
            raise ApiProblem(413, "Too large", f"at most {settings.mailbox_sync_inbound_max_bytes}"
                             " bytes")
        chunks: list[bytes] = []
        received = 0
        async for chunk in request.stream():  # bounded even without Content-Length (chunked)
            received += len(chunk)
            if received > settings.mailbox_sync_inbound_max_bytes:
                raise ApiProblem(413, "Too large",
                                 f"at most {settings.mailbox_sync_inbound_max_bytes} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        why = check_signature(secret, request.headers.get(TIMESTAMP_HEADER),
                              request.headers.get(SIGNATURE_HEADER), body, now=time.time(),
                              tolerance=settings.mailbox_sync_inbound_tolerance_seconds)
        if why is not None:
            ingestor.metrics.mails.labels("webhook", "rejected").inc()
            raise ApiProblem(401, "Bad signature", why)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in ("message/rfc822", "application/octet-stream"):
            raise ApiProblem(415, "Unsupported media type",
                             "send the raw mail as message/rfc822")
        if not body.strip() or b":" not in body.split(b"\n", 1)[0]:
            raise ApiProblem(422, "Not a mail", "the body does not start with a header field")
        recipient = request.headers.get("x-postroom-recipient") or f"{mailbox}@{tenant}.invalid"
        try:
            result = await ingestor.ingest(body, source="webhook", tenant=tenant,
                                           mailbox=mailbox, recipient=recipient,
                                           tls=request.url.scheme == "https",
                                           account_id=f"inbound:{tenant}/{mailbox}")
        except Unroutable as exc:
            raise ApiProblem(404, "Not found", str(exc)) from None
        return {"mail_key": result.mail_key, "event_id": result.event_id,
                "duplicate": result.duplicate}
