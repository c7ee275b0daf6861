"""The accounts: stored (credentials sealed), loaded at start, one worker per watched folder.

IMAP accounts are watched by :class:`imap.FolderWorker` s; provider accounts are driven by
their push notifications (``provider.py``). The static account of the simple case
(``IMAP_HOST``, ``EMAIL_ADDRESS``, ... seed 002's names) is the account ``env``, written from
the environment at every start and removed when the variables are.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from postroom_runtime import ServiceRuntime
from postroom_runtime.store import utcnow

from .config import MailboxSyncSettings
from .folders import FolderWorker
from .handlers import Account, AccountIn, AccountPatch, FolderState, default_port
from .ingest import Ingested, Ingestor
from .metrics import Metrics
from .store import (
    accounts,
    forget_account,
    imap_uids,
    known_uid,
    position,
    save_position,
)
from .vault import SecretUnreadable, Vault

log = logging.getLogger("postroom_mailbox_sync")

ENV_ACCOUNT = "env"


class AccountExists(Exception):
    pass


class AccountInvalid(ValueError):
    """A change that would leave the account invalid (the message says why)."""


class AccountService:
    def __init__(self, runtime: ServiceRuntime, settings: MailboxSyncSettings, vault: Vault,
                 ingestor: Ingestor, metrics: Metrics) -> None:
        self.runtime = runtime
        self.settings = settings
        self.vault = vault
        self.ingestor = ingestor
        self.metrics = metrics
        self.accounts: dict[str, Account] = {}
        self.workers: dict[str, list[FolderWorker]] = {}
        self.errors: dict[str, str] = {}  # account id -> why it is not running
        # provider.py registers itself here: called with every provider account started
        self.on_provider: list[Callable[[Account], Any]] = []
        self.on_halt: list[Callable[[str], Awaitable[None]]] = []
        self.provider_status: Callable[[str], dict[str, Any] | None] = lambda _: None

    # --- store ---------------------------------------------------------------------------

    def _row(self, data: AccountIn, account_id: str, origin: str) -> dict[str, Any]:
        secret = data.password if data.password is not None else data.oauth_token
        assert secret is not None
        return {
            "id": account_id, "kind": data.kind, "origin": origin, "tenant": data.tenant,
            "mailbox": data.mailbox, "address": data.address, "host": data.host.rstrip("/"),
            "port": data.port or data.default_port, "security": data.security,
            "tls_verify": data.tls_verify, "username": data.username,
            "auth": ("bearer" if data.kind == "provider"
                     else "password" if data.password is not None else "xoauth2"),
            "secret": self.vault.seal(secret),
            "webhook_secret": (self.vault.seal(data.webhook_secret)
                               if data.webhook_secret else None),
            "folders": list(data.folders), "mode": data.mode, "mark_seen": data.mark_seen,
            "flag": data.flag, "move_to": data.move_to, "since": data.horizon(),
            "enabled": data.enabled, "created_at": utcnow(), "updated_at": utcnow(),
        }

    def _account(self, row: Any) -> Account:
        since = row.since
        if since is not None and since.tzinfo is None:  # SQLite drops the zone
            since = since.replace(tzinfo=UTC)
        return Account(
            id=row.id, kind=row.kind, origin=row.origin, tenant=row.tenant,
            mailbox=row.mailbox, address=row.address, host=row.host, port=row.port,
            security=row.security, tls_verify=row.tls_verify, username=row.username,
            auth=row.auth, secret=self.vault.open(row.secret), folders=tuple(row.folders),
            mode=row.mode, mark_seen=row.mark_seen, flag=row.flag, move_to=row.move_to,
            since=since, enabled=row.enabled,
            webhook_secret=(self.vault.open(row.webhook_secret)
                            if row.webhook_secret is not None else None),
        )

    def env_account(self) -> AccountIn | None:
        s = self.settings
        if not s.imap_host:
            return None
        security = "ssl" if s.imap_ssl else "starttls" if s.imap_starttls else "none"
        return AccountIn(
            id=ENV_ACCOUNT, tenant=s.mailbox_sync_tenant or "", mailbox=s.mailbox_sync_mailbox,
            address=s.email_address, host=s.imap_host, port=s.imap_port, security=security,
            username=s.email_address or "", password=s.email_password, folders=s.folders,
            mode="auto" if s.imap_idle else "poll",
        )

    async def _apply_env_account(self) -> None:
        wanted = self.env_account()
        async with self.runtime.store.transaction() as session:
            exists = (await session.execute(
                select(accounts.c.id).where(accounts.c.id == ENV_ACCOUNT))).first()
            if exists is not None:
                await session.execute(accounts.delete().where(accounts.c.id == ENV_ACCOUNT))
            if wanted is not None:
                await session.execute(accounts.insert().values(
                    **self._row(wanted, ENV_ACCOUNT, "env")))
            elif exists is not None:
                await forget_account(session, ENV_ACCOUNT)

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, _: ServiceRuntime) -> None:
        await self._apply_env_account()
        async with self.runtime.store.sessions() as session:
            rows = (await session.execute(select(accounts).order_by(accounts.c.id))).all()
        for row in rows:
            try:
                account = self._account(row)
            except SecretUnreadable as exc:
                self.errors[row.id] = str(exc)
                log.error("account not started", extra={"account": row.id, "error": str(exc)})
                continue
            self._run(account)
        log.info("accounts loaded", extra={"accounts": len(self.accounts),
                                           "watched_folders": sum(map(len,
                                                                      self.workers.values()))})

    def _run(self, account: Account) -> None:
        self.accounts[account.id] = account
        if not account.enabled:
            return
        if account.kind == "imap":
            workers = [FolderWorker(self, account, folder) for folder in account.folders]
            self.workers[account.id] = workers
            for worker in workers:
                worker.start()
        else:
            for hook in self.on_provider:
                hook(account)

    async def _halt(self, account_id: str) -> None:
        for worker in self.workers.pop(account_id, []):
            await worker.stop()
        for hook in self.on_halt:
            await hook(account_id)
        self.accounts.pop(account_id, None)
        self.errors.pop(account_id, None)

    async def stop(self, _: ServiceRuntime) -> None:
        for account_id in list(self.accounts):
            await self._halt(account_id)

    # --- the API's operations -------------------------------------------------------------

    async def add(self, data: AccountIn) -> Account:
        account_id = data.id or data.derived_id()
        if account_id == ENV_ACCOUNT:
            raise AccountExists("the id 'env' is the account configured by the environment")
        row = self._row(data, account_id, "api")
        async with self.runtime.store.transaction() as session:
            exists = (await session.execute(
                select(accounts.c.id).where(accounts.c.id == account_id))).first()
            if exists is not None:
                raise AccountExists(f"account {account_id!r} exists")
            await session.execute(accounts.insert().values(**row))
        async with self.runtime.store.sessions() as session:
            stored = (await session.execute(
                select(accounts).where(accounts.c.id == account_id))).one()
        account = self._account(stored)
        self._run(account)
        log.info("account added", extra={"account": account_id, "kind": account.kind,
                                         "tenant": account.tenant})
        return account

    async def update(self, account_id: str, patch: AccountPatch) -> Account | None:
        """Change a stored account and restart its watching with the new settings (None: no
        such account). Its folders keep their positions: a folder it watched before resumes
        where it was; a new server (another UIDVALIDITY) is re-indexed without publishing a
        mail twice."""
        if account_id == ENV_ACCOUNT:
            raise AccountExists("the account 'env' is configured by the environment "
                                "(IMAP_HOST, ...): change those variables")
        async with self.runtime.store.sessions() as session:
            row = (await session.execute(
                select(accounts).where(accounts.c.id == account_id))).first()
        if row is None:
            return None
        current: dict[str, Any] = {
            "id": row.id, "kind": row.kind, "tenant": row.tenant, "mailbox": row.mailbox,
            "address": row.address, "host": row.host, "port": row.port,
            "security": row.security, "tls_verify": row.tls_verify, "username": row.username,
            "folders": list(row.folders), "mode": row.mode, "mark_seen": row.mark_seen,
            "flag": row.flag, "move_to": row.move_to, "since": row.since,
            "enabled": row.enabled, "password": None, "oauth_token": None,
            "webhook_secret": None}
        if row.port == default_port(row.kind, row.security):
            current["port"] = None  # the default: a new security brings its own
        credentials = patch.model_fields_set & {"password", "oauth_token"}
        try:
            if not credentials:
                secret = self.vault.open(row.secret)
                current["password" if row.auth == "password" else "oauth_token"] = secret
            if row.webhook_secret is not None and "webhook_secret" not in \
                    patch.model_fields_set:
                current["webhook_secret"] = self.vault.open(row.webhook_secret)
        except SecretUnreadable as exc:
            raise AccountInvalid(f"{exc}: give the credentials again") from None
        try:
            data = AccountIn.model_validate(patch.apply(current))
        except (ValidationError, ValueError) as exc:
            errors = exc.errors() if isinstance(exc, ValidationError) else None
            raise AccountInvalid("; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'account'}: {e['msg']}" for e in errors)
                if errors else str(exc)) from None
        values = self._row(data, account_id, row.origin)
        values.pop("created_at")
        await self._halt(account_id)
        async with self.runtime.store.transaction() as session:
            await session.execute(accounts.update().where(accounts.c.id == account_id)
                                  .values(**values))
        async with self.runtime.store.sessions() as session:
            stored = (await session.execute(
                select(accounts).where(accounts.c.id == account_id))).one()
        account = self._account(stored)
        self._run(account)
        log.info("account changed", extra={"account": account_id,
                                           "fields": sorted(patch.model_fields_set)})
        return account

    async def remove(self, account_id: str) -> bool:
        await self._halt(account_id)
        async with self.runtime.store.transaction() as session:
            found = await forget_account(session, account_id)
        if found:
            log.info("account removed", extra={"account": account_id})
        return found

    def wake(self, account_id: str) -> bool:
        workers = self.workers.get(account_id)
        for worker in workers or []:
            worker.wake.set()
        return workers is not None

    def status(self, account_id: str) -> dict[str, Any]:
        account = self.accounts.get(account_id)
        workers = self.workers.get(account_id, [])
        error = self.errors.get(account_id)
        folders = [w.status.public() for w in workers]
        pushed = self.provider_status(account_id)
        if pushed is not None:
            folders = [pushed]
        if error is not None:
            state = "error"
        elif account is not None and not account.enabled:
            state = "disabled"
        elif not folders:
            state = "stopped"
        elif all(f["state"] in ("idle", "polling", "syncing", "push") for f in folders):
            state = "ok"
        elif any(f["state"] == "error" for f in folders):
            state = "error"
        else:
            state = "connecting"
        errors = [f"{f['folder']}: {f['last_error']}" for f in folders if f["last_error"]]
        return {"state": state, "last_error": error or (errors[0] if errors else None),
                "folders": folders}

    def summary(self) -> dict[str, Any]:
        """The accounts in /health/ready: state and last error of each (never credentials)."""
        out: dict[str, Any] = {}
        states: dict[str, int] = {}
        for account_id in sorted({*self.accounts, *self.errors}):
            status = self.status(account_id)
            out[account_id] = {"state": status["state"], "last_error": status["last_error"]}
        for workers in self.workers.values():
            for worker in workers:
                states[worker.status.state] = states.get(worker.status.state, 0) + 1
        for state in ("connecting", "syncing", "idle", "polling", "error"):
            self.metrics.folders.labels(state).set(states.get(state, 0))
        return out

    # --- positions and ingest (for the folder workers) -------------------------------------

    async def position(self, account_id: str, folder: str) -> dict[str, Any] | None:
        async with self.runtime.store.sessions() as session:
            return await position(session, account_id, folder)

    async def public_position(self, account_id: str, folder: str) -> dict[str, Any]:
        found = await self.position(account_id, folder) or {}
        public = {k: found.get(k) for k in ("uidvalidity", "uidnext", "highestmodseq",
                                            "history_id")}
        # the counts since the account was added (the folder's own are since this start)
        public["ingested_total"] = found.get("ingested", 0)
        public["duplicates_total"] = found.get("duplicates", 0)
        return public

    async def save_position(self, account_id: str, folder: str, *, keep_higher: bool = False,
                            **values: Any) -> None:
        async with self.runtime.store.transaction() as session:
            if keep_higher:
                current = await position(session, account_id, folder)
                if (current is not None and current["uidvalidity"] == values.get("uidvalidity")
                        and (current["uidnext"] or 0) > (values.get("uidnext") or 0)):
                    values["uidnext"] = current["uidnext"]
            await save_position(session, account_id, folder, **values)

    async def known_uid(self, account_id: str, folder: str, uidvalidity: int,
                        uid: int) -> bool:
        async with self.runtime.store.sessions() as session:
            return await known_uid(session, account_id, folder, uidvalidity, uid)

    async def ingest_imap(self, account: Account, folder: str, state: FolderState,
                          message: Any) -> Ingested:
        async def record(session: Any, key: str, duplicate: bool) -> None:
            await session.execute(imap_uids.insert().values(
                account_id=account.id, folder=folder, uidvalidity=state.uidvalidity,
                uid=message.uid, mail_key=key, seen_at=datetime.now(UTC)))
            current = await position(session, account.id, folder)
            uidnext = message.uid + 1
            if current is not None and current["uidvalidity"] == state.uidvalidity:
                uidnext = max(uidnext, current["uidnext"] or 0)
            await save_position(session, account.id, folder, uidvalidity=state.uidvalidity,
                                uidnext=uidnext, highestmodseq=state.highestmodseq,
                                ingested=0 if duplicate else 1,
                                duplicates=1 if duplicate else 0)

        return await self.ingestor.ingest(
            message.raw, source="imap", tenant=account.tenant, mailbox=account.mailbox,
            recipient=account.address, tls=account.security != "none", account_id=account.id,
            extra=record)
