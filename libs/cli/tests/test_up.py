"""`postroom up` as a user runs it: a real process, real ports, Ctrl-C at the end."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from postroom_cli.services import SERVICES
from postroom_testing import STARTUP_SECONDS, free_port

SEED = """
tenants:
  - slug: acme
    name: ACME GmbH
    domains: [intake.example.com]
    mailboxes:
      orders: {actions: [extract]}
"""

MISSING = {s.name: why for s in SERVICES if (why := s.entry_point_missing())}


@dataclass
class Ports:
    nats: int
    monitor: int
    smtp: int
    http_base: int

    def args(self) -> list[str]:
        return ["--nats-port", str(self.nats), "--nats-monitor-port", str(self.monitor),
                "--smtp-port", str(self.smtp), "--http-port-base", str(self.http_base)]

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats}"


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def consecutive_free_ports(count: int) -> int:
    for _ in range(200):
        base = free_port()
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no run of free ports")


@pytest.fixture
def ports() -> Ports:
    return Ports(nats=free_port(), monitor=free_port(), smtp=free_port(),
                 # one port per offset from the base, gaps included (8025, 8026, 8028: four)
                 http_base=consecutive_free_ports(
                     max(s.http_port_from(0) for s in SERVICES) + 1))


@pytest.fixture
def seed(tmp_path: Path) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text(SEED)
    return path


def pid_in(line: str) -> int:
    match = re.search(r"\(pid (\d+)", line)
    assert match, line
    return int(match.group(1))


def ready_status(url: str) -> int | None:
    try:
        return httpx.get(f"{url}/health/ready", timeout=2, trust_env=False).status_code
    except httpx.HTTPError:
        return None


def test_up_starts_everything_prints_the_addresses_and_stops_cleanly_on_ctrl_c(
    cli_process, cli, ports: Ports, seed: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    up = cli_process("up", "--data-dir", str(data), "--tenants", str(seed), *ports.args())

    nats_pid = pid_in(up.wait_for("nats-server started (pid", timeout=STARTUP_SECONDS))
    up.wait_for("Postroom is up.", timeout=STARTUP_SECONDS)
    up.wait_for("Ctrl-C stops everything.", timeout=STARTUP_SECONDS)  # the banner's last line
    out = up.output
    assert f"NATS  nats://127.0.0.1:{ports.nats}   (monitoring http://127.0.0.1:{ports.monitor})" \
        in out
    assert f"data  {data.resolve()}" in out
    assert "tenants: 1 added from" in out
    running = [s for s in SERVICES if s.name not in MISSING]
    for service in running:
        url = f"http://127.0.0.1:{service.http_port_from(ports.http_base)}"
        assert re.search(rf"\b{service.name}\s+{re.escape(url)}$", out, re.M), out
        assert ready_status(url) == 200, f"{service.name} at {url} is not ready"
    if "smtp-ingress" not in MISSING:
        assert f"SMTP  127.0.0.1:{ports.smtp}" in out
        assert listening(ports.smtp)
    if "console" not in MISSING:
        # an admin key for this data dir, kept there (0600), printed and accepted
        key_file = data / "console-admin-key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        key = key_file.read_text().strip()
        console = next(s for s in SERVICES if s.name == "console")
        url = f"http://127.0.0.1:{console.http_port_from(ports.http_base)}/"
        assert f"Console {url}  (admin key {key})" in out
        session = httpx.get(f"{url}api/v1/session", headers={"Authorization": f"Bearer {key}"},
                            timeout=5, trust_env=False)
        assert session.json() == {"name": "admin", "tenant": None, "admin": True}
        if "mailbox-sync" not in MISSING:
            # the Mailboxes page reaches the stack's mailbox-sync with the token it keeps
            mailboxes = httpx.get(f"{url}api/v1/mailboxes", timeout=10, trust_env=False,
                                  headers={"Authorization": f"Bearer {key}"}).json()
            assert mailboxes == {"configured": True, "reachable": True, "accounts": []}, \
                mailboxes
    service_pids = [pid_in(up.wait_for(f"{s.name} started (pid")) for s in running]

    # JetStream is durable (fsync on every write) and the seed landed in the registry
    config = (data / "nats" / "nats-server.conf").read_text()
    assert "sync_interval: always" in config
    assert f'store_dir: "{(data / "nats" / "jetstream").resolve()}"' in config
    result = cli("tenants", "list", nats_url=ports.nats_url)
    assert result.exit_code == 0
    assert result.output.splitlines()[1].startswith("acme ")

    # one stack per data dir
    second = cli_process("up", "--data-dir", str(data), "--nats-port", str(free_port()),
                         "--nats-monitor-port", str(free_port()), "--skip", "smtp-ingress",
                         "--skip", "attachment-extractor")
    assert second.wait(30) == 1
    assert "another `postroom up`" in second.output

    up.signal(signal.SIGINT)
    assert up.wait(60) == 0, up.output
    said = [line.split("| ", 1)[1] for line in up.stdout if line.startswith("postroom ")]
    # services first, then nats-server
    expected = (["services stopped"] if running else []) + ["nats-server stopped", "stopped"]
    assert said[-len(expected):] == expected, said
    assert "stopping (press Ctrl-C again to kill at once) ..." in said
    assert not alive(nats_pid), "nats-server outlived postroom up"
    for pid in service_pids:
        assert not alive(pid), "a service outlived postroom up"
    assert not listening(ports.nats)
    assert not listening(ports.smtp)
    if MISSING:
        pytest.skip("not checked /health/ready of " + "; ".join(
            f"{name} ({why})" for name, why in MISSING.items()))


@pytest.mark.skipif(bool(MISSING), reason=f"services without an entry point yet: {MISSING}")
def test_up_serves_mail_end_to_end_and_restarts_a_crashed_service(
    cli_process, cli, ports: Ports, seed: Path, tmp_path: Path
) -> None:
    env_file = tmp_path / "stack.env"
    env_file.write_text("# overrides for every service\nSMTP_HOSTNAME=mx.postroom.test\n")
    up = cli_process("up", "--data-dir", str(tmp_path / "data"), "--tenants", str(seed),
                     "--env-file", str(env_file), *ports.args())
    up.wait_for("Postroom is up.", timeout=STARTUP_SECONDS)

    # the --env-file value reached the service: it is the name in the SMTP greeting
    with smtplib.SMTP("127.0.0.1", ports.smtp, timeout=10) as smtp:
        code, banner = smtp.ehlo()
        assert code == 250
        assert banner.decode().startswith("mx.postroom.test")

    result = cli("send", "--server", f"127.0.0.1:{ports.smtp}", "--demo")
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1].startswith("250")

    extractor = f"http://127.0.0.1:{ports.http_base + 1}"
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        docs = cli("documents", "--url", extractor, "--tenant", "acme", "--json")
        assert docs.exit_code == 0, docs.output
        names = sorted(d["filename"] for d in json.loads(docs.output))
        if len(names) == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert names == ["purchase-order-PO-2025-0042.csv", "purchase-order-PO-2025-0042.pdf",
                     "purchase-order-PO-2025-0042.xlsx"]
    table = cli("documents", "--url", extractor)
    assert "purchase-order-PO-2025-0042.pdf" in table.output

    events = cli("tail", "--from-start", "-n", "1", "postroom.mail.received.*",
                 nats_url=ports.nats_url)
    assert json.loads(events.stdout.splitlines()[0])["event_type"] == "mail.received"

    # a crashed service is restarted, says so, and becomes ready again
    ingress_pid = pid_in(up.wait_for("smtp-ingress started (pid"))
    mark = len(up.stdout)
    os.kill(ingress_pid, signal.SIGKILL)
    up.wait_for("smtp-ingress exited with signal SIGKILL", after=mark, timeout=STARTUP_SECONDS)
    restarted = up.wait_for("smtp-ingress restarted (pid", after=mark, timeout=STARTUP_SECONDS)
    assert pid_in(restarted) != ingress_pid
    ingress = f"http://127.0.0.1:{ports.http_base}"
    deadline = time.monotonic() + STARTUP_SECONDS
    while ready_status(ingress) != 200:
        assert time.monotonic() < deadline, "smtp-ingress not ready again after its restart"
        time.sleep(0.2)
    result = cli("send", "--server", f"127.0.0.1:{ports.smtp}", "--subject", "after the crash")
    assert result.exit_code == 0, result.output

    up.signal(signal.SIGTERM)
    assert up.wait(60) == 0, up.output
    assert up.stdout[-1].endswith("| stopped")


@pytest.mark.skipif("smtp-ingress" in MISSING, reason=f"no smtp-ingress: {MISSING}")
def test_up_offers_starttls_with_a_self_signed_certificate_it_keeps(
    cli_process, cli, ports: Ports, seed: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    args = ["up", "--data-dir", str(data), "--tenants", str(seed),
            "--skip", "attachment-extractor", *ports.args()]
    up = cli_process(*args)
    up.wait_for("Ctrl-C stops everything.", timeout=STARTUP_SECONDS)  # the banner's last line
    cert = data.resolve() / "tls" / "smtp-snakeoil.pem"
    assert f"generated the self-signed SMTP certificate {cert}" in up.output
    line = up.wait_for("  TLS   ")
    match = re.search(r"STARTTLS offered with a self-signed certificate (\S+) "
                      r"\(SHA-256 ((?:[0-9A-F]{2}:){31}[0-9A-F]{2})\)$", line)
    assert match is not None, line
    assert match.group(1) == str(cert)
    fingerprint = match.group(2)

    # a real STARTTLS, the server verified against that certificate, then a mail over it
    context = ssl.create_default_context(cafile=str(cert))
    raw = (b"From: buyer@supplier.example\r\nTo: orders+acme@intake.example.com\r\n"
           b"Subject: over TLS\r\nMessage-ID: <tls-1@supplier.example>\r\n\r\nhello\r\n")
    with smtplib.SMTP("127.0.0.1", ports.smtp, timeout=30) as smtp:
        smtp.ehlo("tls.client.example")
        assert smtp.has_extn("starttls")
        assert smtp.starttls(context=context)[0] == 220
        served = hashlib.sha256(smtp.sock.getpeercert(binary_form=True)).hexdigest().upper()
        version = smtp.sock.version()
        smtp.ehlo("tls.client.example")
        refused = smtp.sendmail("buyer@supplier.example", ["orders+acme@intake.example.com"], raw)
    assert refused == {}
    assert ":".join(served[i:i + 2] for i in range(0, 64, 2)) == fingerprint
    events = cli("tail", "--from-start", "-n", "1", "postroom.mail.received.*",
                 nats_url=ports.nats_url)
    event = json.loads(events.stdout.splitlines()[0])["payload"]
    assert event["tls"] is True
    assert (event["smtp"]["tls_version"], event["smtp"]["helo"]) == (version,
                                                                     "tls.client.example")
    up.signal(signal.SIGINT)
    assert up.wait(60) == 0, up.output

    # the next start keeps the certificate (a client that pinned it keeps working)
    again = cli_process(*args)
    again.wait_for("Ctrl-C stops everything.", timeout=STARTUP_SECONDS)
    assert f"reusing the self-signed SMTP certificate {cert}" in again.output
    assert f"(SHA-256 {fingerprint})" in again.wait_for("  TLS   ")
    again.signal(signal.SIGINT)
    assert again.wait(60) == 0, again.output


def test_up_refuses_a_port_in_use(cli_process, ports: Ports, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports.nats))
        busy.listen()
        up = cli_process("up", "--data-dir", str(tmp_path / "data"), *ports.args())
        assert up.wait(30) == 1
    assert f"error: 127.0.0.1:{ports.nats} for NATS (--nats-port) is already in use" \
        in up.output


def test_up_with_a_bad_seed_file_says_which(cli_process, ports: Ports, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("tenants: [{slug: acme}]\n")
    up = cli_process("up", "--data-dir", str(tmp_path / "data"), "--tenants", str(bad),
                     *ports.args())
    assert up.wait(30) == 1
    assert f"error: tenant seed file {bad}" in up.output
    assert not listening(ports.nats)


async def test_nothing_is_left_when_up_is_killed(cli_process, ports: Ports,
                                                 tmp_path: Path) -> None:
    """Even SIGKILL on `postroom up` takes nats-server and the services with it."""
    up = cli_process("up", "--data-dir", str(tmp_path / "data"), *ports.args(),
                     "--skip", "attachment-extractor", "--skip", "smtp-ingress")
    line = await asyncio.to_thread(up.wait_for, "nats-server started (pid", STARTUP_SECONDS)
    nats_pid = pid_in(line)
    await asyncio.to_thread(up.wait_for, "Postroom is up.", STARTUP_SECONDS)
    up.kill()
    deadline = time.monotonic() + 10
    while alive(nats_pid):
        assert time.monotonic() < deadline, "nats-server survived SIGKILL of postroom up"
        await asyncio.sleep(0.05)


def test_run_execs_one_service_in_the_foreground(cli_process, nats_url, tmp_path: Path) -> None:
    service = next((s for s in SERVICES if s.name not in MISSING), None)
    if service is None:
        pytest.skip(f"no service has an entry point yet: {MISSING}")
    port = free_port()
    proc = cli_process("--nats-url", nats_url, "run", service.name, "--data-dir",
                       str(tmp_path / "data"), env={"HTTP_PORT": str(port)})
    deadline = time.monotonic() + STARTUP_SECONDS
    while ready_status(f"http://127.0.0.1:{port}") != 200:
        assert proc.proc.poll() is None, proc.output + "\n".join(proc.stderr)
        assert time.monotonic() < deadline, f"{service.name} not ready via `postroom run`"
        time.sleep(0.2)
    # the default store is a SQLite file in the data dir, named after the service
    assert (tmp_path / "data" / f"{service.store_name}.db").exists()
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_run_knows_the_services(cli) -> None:
    result = cli("run", "no-such-service")
    assert result.exit_code == 2
    assert "smtp-ingress" in result.output and "attachment-extractor" in result.output
