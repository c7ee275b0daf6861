"""No relay configured (the embedded default): mail is captured as .eml files, reported as
delivered with relay 'capture', and `postroom outbox` lists and prints it."""

from __future__ import annotations

import subprocess
import sys
from email import policy
from email.parser import BytesParser
from pathlib import Path

import mailer_samples as samples


def postroom(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "postroom_cli", *args], capture_output=True,
                          check=True, timeout=60)
    return done.stdout.decode()


async def test_captured_mail_is_listed_and_shown(start_mailer, tmp_path: Path):
    mailer = await start_mailer("")  # no relay
    wav = samples.wav_bytes()
    event = samples.request(
        "vm-000201", kind="voicemail", original=await mailer.put(samples.voicemail_mail(
            wavs=[wav])), template_data={"transcripts": [samples.transcript()]},
        to=["alice@acme.example", "frontdesk@acme.example"])
    await mailer.request(event)
    sent = await mailer.wait_event("delivery.sent", event.delivery_id)
    assert sent["relay"] == "capture"
    assert sent["to"] == ["alice@acme.example", "frontdesk@acme.example"]
    assert await mailer.metric("postroom_mailer_sends_total", 'outcome="captured"') == 1

    outbox = tmp_path / "outbox"
    files = sorted(p.name for p in outbox.iterdir())
    assert files == ["vm-000201.eml"]  # no temporary file left behind
    captured = BytesParser(policy=policy.default).parsebytes(
        (outbox / "vm-000201.eml").read_bytes())
    assert captured["X-Postroom-Envelope-To"] == ("<alice@acme.example>, "
                                                  "<frontdesk@acme.example>")
    assert captured["Message-ID"] == "<vm-000201@mailer.test>"
    assert [p.get_content() for p in captured.iter_attachments()] == [wav]

    listing = postroom("outbox", "--dir", str(outbox))
    assert "vm-000201" in listing and "[Voicemail from Bob Smith 5551234]" in listing
    assert "alice@acme.example, frontdesk@acme.example" in listing
    shown = postroom("outbox", "--dir", str(outbox), "show", "vm-000201")
    assert "Subject: [Voicemail from Bob Smith 5551234] Message from 5551234" in shown
    assert "Please call me back at three" in shown
    assert postroom("outbox", "--dir", str(tmp_path / "none")).startswith("no captured mail")
