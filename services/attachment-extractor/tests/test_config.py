"""Settings come from the environment; a bad value names its variable."""

from __future__ import annotations

import pytest

from postroom_attachment_extractor.config import ExtractorSettings
from postroom_attachment_extractor.handlers import Limits
from postroom_runtime import ConfigError, load_settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_SERVICE_NAME", "HTTP_PORT", "DATABASE_URL", "EXTRACT_MAX_PARTS",
                 "BLOB_SMALL_MAX_BYTES"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(ExtractorSettings)
    assert settings.otel_service_name == "attachment-extractor"
    assert settings.http_port == 8026
    assert settings.blob_small_max_bytes == 524_288  # attachments up to 512 KiB in the KV bucket
    assert settings.database_url == "sqlite+aiosqlite:///var/attachment_extractor.db"
    assert settings.limits() == Limits(max_parts=200, max_depth=10,
                                       max_attachment_bytes=26_214_400, include_inline=False,
                                       body_text_limit=65_536, text_excerpt_chars=2_000)


def test_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXTRACT_MAX_PARTS", "50")
    monkeypatch.setenv("EXTRACT_MAX_DEPTH", "3")
    monkeypatch.setenv("EXTRACT_MAX_ATTACHMENT_BYTES", "1048576")
    monkeypatch.setenv("EXTRACT_INCLUDE_INLINE", "true")
    monkeypatch.setenv("EXTRACT_BODY_TEXT_LIMIT", "100")
    monkeypatch.setenv("EXTRACT_TEXT_EXCERPT_CHARS", "0")
    assert load_settings(ExtractorSettings).limits() == Limits(
        max_parts=50, max_depth=3, max_attachment_bytes=1_048_576, include_inline=True,
        body_text_limit=100, text_excerpt_chars=0)


def test_a_bad_limit_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXTRACT_MAX_PARTS", "0")
    monkeypatch.setenv("EXTRACT_INCLUDE_INLINE", "perhaps")
    with pytest.raises(ConfigError) as err:
        load_settings(ExtractorSettings)
    assert "EXTRACT_MAX_PARTS" in str(err.value) and "EXTRACT_INCLUDE_INLINE" in str(err.value)
    assert err.value.code == 2


def test_the_entry_point_exits_2_on_bad_configuration() -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "postroom-attachment-extractor"
    result = subprocess.run([str(script)], env={**os.environ, "EXTRACT_MAX_DEPTH": "-1"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "EXTRACT_MAX_DEPTH" in result.stderr
