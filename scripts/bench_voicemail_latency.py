#!/usr/bin/env python
"""Voicemail latency: SMTP ``250`` → the enhanced mail at the outbound relay, through the whole
embedded stack (``postroom up``: smtp-ingress, attachment-extractor, transcriber with the
offline engine, mailer), side by side with a baseline in the same run: the same PBX mail with
the recording left out, which the transcriber forwards unchanged (the path without speech).

The script starts its own SMTP sink (aiosmtpd, the relay the mailer sends to) and
``postroom up`` on free ports in a temporary data directory, then sends ``--repeat`` mails of
each kind from loopback (the demo tenant's PBX) to ``alice@acme.example``, one at a time,
waiting for each at the sink. The recording is built from the committed fixtures: ``--seconds``
of 8 kHz µ-law speech (sentences joined with half a second of silence).

    uv run python scripts/bench_voicemail_latency.py                 # ~20 s voicemail, 5 each
    uv run python scripts/bench_voicemail_latency.py --seconds 60 --repeat 3
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import benchcommon
import numpy as np
import soundfile as sf
from aiosmtpd.controller import Controller

from postroom_testing.procs import free_port

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "libs/speech/tests/fixtures/voicemail"


def recording(seconds: float) -> tuple[bytes, float]:
    """µ-law WAV of at least ``seconds`` of speech from the fixtures; its length."""
    refs = json.loads((FIXTURES / "references.json").read_text())["sentences"]
    parts: list[np.ndarray] = []
    total = 0.0
    for ref in refs:
        audio, rate = sf.read(FIXTURES / ref["file"], dtype="float32")
        parts += [audio, np.zeros(rate // 2, dtype="float32")]
        total += len(audio) / rate + 0.5
        if total >= seconds:
            break
    out = io.BytesIO()
    sf.write(out, np.concatenate(parts), 8000, subtype="ULAW", format="WAV")
    return out.getvalue(), total


class Sink:
    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}  # X-Bench-Id -> arrival time
        self.changed = threading.Condition()
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                data = bytes(envelope.original_content or envelope.content)
                for line in data.split(b"\r\n"):
                    if line.lower().startswith(b"x-bench-id:"):
                        with sink.changed:
                            sink.arrivals[line.split(b":", 1)[1].strip().decode()] = \
                                time.monotonic()
                            sink.changed.notify_all()
                return "250 2.0.0 Ok"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port,
                                     decode_data=False, data_size_limit=50 * 1024 * 1024)
        self.controller.start()

    def wait(self, bench_id: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        with self.changed:
            while bench_id not in self.arrivals:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SystemExit(f"{bench_id} did not reach the relay in {timeout:g} s")
                self.changed.wait(left)
            return self.arrivals[bench_id]


def pbx_mail(bench_id: str, wav: bytes | None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "IP Office Voicemail <voicemail@acme.example>"
    msg["To"] = "alice@acme.example"
    msg["Subject"] = "Voice Message from Robert Miller (5551234)"
    msg["Message-ID"] = make_msgid(domain="pbx.acme.example")
    msg["X-Bench-Id"] = bench_id
    msg.set_content("You have a new voice message from Robert Miller (5551234).\n")
    if wav is not None:
        msg.add_attachment(wav, maintype="audio", subtype="wav", filename="Msg0001.WAV")
    return msg


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0, help="length of the voicemail")
    p.add_argument("--repeat", type=int, default=5, help="mails of each kind (default 5)")
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args()

    wav, length = recording(args.seconds)
    sink = Sink()
    ports = {"nats": free_port(), "monitor": free_port(), "smtp": free_port()}
    base = free_port()
    while any(not _free(base + i) for i in range(8)):
        base = free_port()
    data = Path(tempfile.mkdtemp(prefix="bench-vm-"))
    env = {**os.environ, "MAILER_RELAY_URL": f"smtp://127.0.0.1:{sink.port}",
           "LOG_LEVEL": "WARNING"}
    up = subprocess.Popen(
        [sys.executable, "-m", "postroom_cli", "up", "--data-dir", str(data),
         "--nats-port", str(ports["nats"]), "--nats-monitor-port", str(ports["monitor"]),
         "--smtp-port", str(ports["smtp"]), "--http-port-base", str(base)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    assert up.stdout is not None
    for line in up.stdout:
        if "Ctrl-C stops everything" in line:
            break
    else:
        raise SystemExit("postroom up ended before it was up")
    threading.Thread(target=lambda: [None for _ in up.stdout], daemon=True).start()  # type: ignore[union-attr]

    rows: dict[str, list[float]] = {"voicemail": [], "baseline: same mail, no recording": []}
    try:
        # one warm-up of each (model load, first connections), not counted
        for n in range(args.repeat + 1):
            for kind, audio in (("voicemail", wav), ("baseline: same mail, no recording", None)):
                bench_id = f"{kind[:4]}-{n}"
                msg = pbx_mail(bench_id, audio)
                with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=60) as client:
                    client.send_message(msg, from_addr="voicemail@acme.example",
                                        to_addrs=["alice@acme.example"])
                accepted = time.monotonic()  # the 250 to DATA
                arrived = sink.wait(bench_id, args.timeout)
                if n:
                    rows[kind].append(arrived - accepted)
    finally:
        os.killpg(up.pid, signal.SIGINT)
        up.wait(60)
        sink.controller.stop()

    print(f"voicemail of {length:.1f} s (8 kHz µ-law), {args.repeat} mails each, one at a time")
    print(f"{'kind':36} {'min s':>6} {'p50 s':>6} {'max s':>6}")
    for kind, values in rows.items():
        values.sort()
        print(f"{kind:36} {values[0]:6.2f} {benchcommon.percentile(values, 50):6.2f} "
              f"{values[-1]:6.2f}")
    info = benchcommon.machine_info()
    print(f"machine: {info['cpu_model']}, {info['cpu_usable']} usable cores, {info['python']}; "
          f"load average after {benchcommon.loadavg()}")
    return 0


def _free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
