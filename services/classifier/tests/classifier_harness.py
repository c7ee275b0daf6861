"""Helpers of the classifier's tests: the bus as the other services use it (mail.parsed with
its raw mail in the blob store, mail.label_corrected as the console publishes it), reading
events back from the stream, waiting with a deadline, and a real spamd."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import tempfile
import uuid
from pathlib import Path
from typing import Any

import nats

from postroom_contracts import (
    EVENTS_STREAM,
    DocumentRef,
    MailLabelCorrected,
    MailParsed,
    RouteDecision,
    derive_event_id,
)
from postroom_runtime import NatsBlobStore, event_headers
from postroom_testing import procs
from postroom_testing.procs import ManagedProcess

SPAMD = "/usr/sbin/spamd"


class Bus:
    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.blobs = NatsBlobStore(self.js, "postroom-blobs")

    async def parsed(self, subject: str, body: str, headers: str,
                     attachments: list[tuple[str, str]],
                     route: RouteDecision | None, *, raw: bytes | None = None,
                     key: str | None = None, tenant: str = "acme") -> MailParsed:
        """Publish a mail.parsed (a new event; ``key`` reuses a mail key, as a mail parsed
        again would) with its raw mail in the blob store."""
        key = key or uuid.uuid4().hex[:16]
        if raw is None:
            raw = (f"From: someone@example.org\r\nTo: alice@acme.example\r\n"
                   f"Subject: {subject}\r\nMessage-ID: <{key}@example.org>\r\n"
                   f"{headers}\r\n{body}").encode()
        docs = []
        for index, (filename, content_type) in enumerate(attachments):
            data = f"{filename} {key}".encode()
            ref = await self.blobs.put(data, content_type=content_type)
            docs.append(DocumentRef(document_id=derive_event_id(key, "document", str(index)),
                                    index=index, filename=filename, content_type=content_type,
                                    size=len(data), sha256=ref.sha256, blob=ref))
        event = MailParsed(
            event_id=derive_event_id(key, "mail.parsed", uuid.uuid4().hex), tenant=tenant,
            mail_key=key, message_id=f"<{key}@example.org>", subject=subject,
            header_from="someone@example.org", body_text=body,
            document_ids=[d.document_id for d in docs], documents=docs, route=route,
            raw=await self.blobs.put(raw, content_type="message/rfc822"))
        await self.publish(event)
        return event

    async def publish(self, event: Any, msg_id: str | None = None) -> None:
        headers = event_headers(event)
        if msg_id is not None:
            headers = {**headers, "Nats-Msg-Id": msg_id}
        await self.js.publish(event.nats_subject, event.model_dump_json().encode(),
                              headers=headers)

    async def correct(self, parsed: MailParsed, label: str, *, previous: str | None = None,
                      by: str = "admin", with_raw: bool = True,
                      correction_id: str | None = None) -> MailLabelCorrected:
        """What the console publishes when a person corrects the mail's label."""
        correction_id = correction_id or uuid.uuid4().hex
        event = MailLabelCorrected(
            event_id=derive_event_id(correction_id, "mail.label_corrected"),
            tenant=parsed.tenant, mail_key=parsed.mail_key, correction_id=correction_id,
            email_id=parsed.message_id, label=label, previous_label=previous,
            corrected_by=by, raw=parsed.raw if with_raw else None)  # type: ignore[arg-type]
        await self.publish(event)
        return event

    async def events(self, event_type: str) -> list[dict[str, Any]]:
        info = await self.js.stream_info(EVENTS_STREAM)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await self.js.get_msg(EVENTS_STREAM, seq)
            except nats.js.errors.NotFoundError:
                continue
            if msg.subject.startswith(f"postroom.{event_type}."):
                out.append(json.loads(msg.data))
        return out

    async def wait_for(self, event_type: str, mail_key: str, within: float = 120,
                       causation_id: str | None = None) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + within
        while True:
            found = [e for e in await self.events(event_type) if e["mail_key"] == mail_key
                     and (causation_id is None or e["causation_id"] == causation_id)]
            if found:
                assert len(found) == 1, found
                return found[0]
            assert asyncio.get_running_loop().time() < deadline, f"no {event_type}"
            await asyncio.sleep(0.1)


async def consumer_idle(bus: Bus, durable: str = "classifier-mail-parsed") -> bool:
    info = await bus.js.consumer_info(EVENTS_STREAM, durable)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def until(check: Any, what: str, within: float = 60) -> Any:
    return await procs.until(check, within, what=what, interval=0.1)


class SpamdProcess(ManagedProcess):
    """Debian's spamd on a free port of 127.0.0.1: no network tests (``--local``), no user
    configuration (``-x``), the distribution's rules and an empty site configuration of its
    own (only the plugin ``.pre`` files, without which spamd cannot scan), one child. As root
    it runs as ``nobody`` (spamd will not run as root), so its folder is world-readable.
    Ready when it answers PING with PONG."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.folder = Path(tempfile.mkdtemp(prefix="postroom-spamd-"))
        site, home = self.folder / "site", self.folder / "home"
        site.mkdir()
        home.mkdir()
        for pre in Path("/etc/spamassassin").glob("*.pre"):
            shutil.copy(pre, site / pre.name)
        os.chmod(self.folder, 0o755)
        os.chmod(site, 0o755)
        os.chmod(home, 0o777)
        argv = [SPAMD, "--listen", f"127.0.0.1:{port}", "--max-children", "1", "--local",
                "-x", "--siteconfigpath", str(site), "--helper-home-dir", str(home),
                "--syslog", "stderr"]
        if os.geteuid() == 0:
            argv += ["-u", "nobody"]
        super().__init__(argv, name="spamd", log_path=self.folder / "spamd.log")

    def check_ready(self) -> bool:
        if not self.is_running:
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as conn:
                conn.sendall(b"PING SPAMC/1.5\r\n\r\n")
                conn.settimeout(5)
                return b"PONG" in conn.recv(200)
        except OSError:
            return False

    def cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
