"""A real Dovecot IMAP server for tests: ``dovecot -c <own config> -F`` on a free port with a
throwaway Maildir store and passwd-file users (Debian's ``dovecot-imapd``, installed by
scripts/test-deps.sh; nothing of /etc/dovecot is used).

    server = Dovecot(Dovecot.make_root()).start()
    server.append(raw)              # IMAP APPEND as the user
    server.kick(); server.stop(); server.start()
    server.cleanup()
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

from postroom_testing.procs import free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"
USER, PASSWORD = "support@acme.example", "s3cret-pass"


class Dovecot:
    """``dovecot -F`` with its own config, passwd-file users and Maildir store under ``root``."""

    def __init__(self, root: Path, *, tls: tuple[bytes, bytes] | None = None,
                 oauth2_introspection_url: str | None = None) -> None:
        """``tls``: (certificate chain PEM, key PEM) offers STARTTLS on ``port`` and implicit
        TLS on ``tls_port``; ``oauth2_introspection_url``: XOAUTH2 logins, their tokens checked
        at that URL (RFC 7662 introspection, ``{"active": true, "username": ...}``)."""
        self.root = root
        self.port = free_port()
        self.tls_port = free_port() if tls is not None else 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.config = root / "dovecot.conf"
        for sub in ("run", "state", "mail"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        shutil.chown(root / "mail", "nobody", "nogroup")
        (root / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
        ssl = "ssl = no"
        if tls is not None:
            (root / "cert.pem").write_bytes(tls[0])
            (root / "key.pem").write_bytes(tls[1])
            (root / "key.pem").chmod(0o600)
            ssl = f"ssl = yes\nssl_cert = <{root}/cert.pem\nssl_key = <{root}/key.pem"
        mechanisms = "plain login"
        oauth = ""
        if oauth2_introspection_url is not None:
            mechanisms += " xoauth2 oauthbearer"
            (root / "oauth2.conf.ext").write_text(
                f"introspection_url = {oauth2_introspection_url}\n"
                "introspection_mode = post\nusername_attribute = username\n"
                "active_attribute = active\nactive_value = true\n")
            oauth = f"""passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {root}/oauth2.conf.ext
}}
"""
        self.config.write_text(f"""
base_dir = {root}/run
state_dir = {root}/state
instance_name = postroom-test-{self.port}
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
{ssl}
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
mail_location = maildir:{root}/mail/%u
first_valid_uid = 1
shutdown_clients = yes
mail_max_userip_connections = 200
{oauth}passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.tls_port}
  }}
}}
service imap {{
  process_limit = 200
}}
""")

    def start(self) -> Dovecot:
        self.proc = subprocess.Popen(
            [DOVECOT, "-c", str(self.config), "-F"], stdout=subprocess.DEVNULL,
            stderr=open(self.root / "dovecot.stderr", "ab"))
        deadline = time.monotonic() + 60  # a bound for a hang: a busy machine starts it slowly
        while True:
            try:
                with imaplib.IMAP4("127.0.0.1", self.port, timeout=2) as client:
                    client.noop()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"dovecot did not start: {self.log()}") from None
                time.sleep(0.05)

    def _children(self) -> list[int]:
        if self.proc is None:
            return []
        found = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                               text=True, check=False).stdout
        return [int(pid) for pid in found.split()]

    def imap_processes(self) -> list[int]:
        """Pids of the server's imap processes (one per logged-in connection)."""
        out = []
        for pid in self._children():
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if command.split(b"\0")[0].split(b" ")[0].endswith(b"/imap"):
                out.append(pid)
        return out

    def stop(self) -> None:
        """Stop the server and every process it started: its clients' connections drop (an
        imap process would otherwise outlive its master and keep serving)."""
        children = self._children()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def doveadm(self, *args: str) -> str:
        return subprocess.run([DOVEADM, "-c", str(self.config), *args], check=True,
                              capture_output=True, text=True, timeout=20).stdout

    def kick(self) -> None:
        """Disconnect every session of the user (doveadm kick: the server closes them)."""
        self.doveadm("kick", USER)

    def imap(self) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        client.login(USER, PASSWORD)
        return client

    def append(self, raw: bytes, folder: str = "INBOX", when: datetime | None = None) -> None:
        with self.imap() as client:
            date = imaplib.Time2Internaldate(when) if when is not None else None
            status, data = client.append(folder, None, date, raw)
            assert status == "OK", data

    def create(self, folder: str) -> None:
        with self.imap() as client:
            client.create(folder)

    def delete(self, folder: str) -> None:
        with self.imap() as client:
            status, data = client.delete(folder)
            assert status == "OK", data

    def uidvalidity(self, folder: str = "INBOX") -> int:
        with self.imap() as client:
            _, data = client.status(folder, "(UIDVALIDITY)")
        return int(data[0].split(b"UIDVALIDITY ")[1].rstrip(b")"))

    def messages(self, folder: str = "INBOX") -> list[tuple[int, bytes]]:
        """(UID, flags) of every message in ``folder``."""
        with self.imap() as client:
            client.select(folder)
            _, data = client.uid("FETCH", "1:*", "(UID FLAGS)")
        out = []
        for line in data:
            if isinstance(line, bytes) and b"UID" in line:
                uid = int(line.split(b"UID ")[1].split()[0].rstrip(b")"))
                out.append((uid, line.split(b"FLAGS (")[1].split(b")")[0]))
        return out

    @staticmethod
    def make_root() -> Path:
        """A fresh folder for one server. Not under pytest's tmp_path: its parents are 0700,
        and Dovecot's auth and mail processes run as unprivileged users that must reach the
        passwd file and the mail store."""
        root = Path(tempfile.mkdtemp(prefix="postroom-dovecot-"))
        root.chmod(0o755)
        return root

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
