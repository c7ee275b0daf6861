"""``postroom transcribe``: the default (offline) engine on committed recordings."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import Result

FIXTURES = Path(__file__).resolve().parents[2] / "speech/tests/fixtures/voicemail"


def test_one_json_line_per_file(cli: Callable[..., Result], tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSCRIBE_ENGINE", "offline")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....WAVEjunk")
    result = cli("transcribe", str(FIXTURES / "test_ulaw.wav"), str(broken))
    assert result.exit_code == 1  # one file could not be read
    good, bad = (json.loads(line) for line in result.stdout.splitlines())
    assert set(good) == {"file", "text", "confidence", "engine", "duration_s", "rtf"}
    assert good["file"].endswith("test_ulaw.wav") and good["engine"] == "moonshine"
    assert "invoice" in good["text"].lower() and 0 < good["confidence"] <= 1
    assert good["duration_s"] == pytest.approx(6.0, abs=0.2) and good["rtf"] > 0
    assert bad["file"].endswith("broken.wav") and bad["text"] is None
    assert "cannot decode audio" in bad["error"]
