"""The pieces `postroom up` builds a service's world from: environment, config, seed file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from postroom_cli.services import BY_NAME
from postroom_cli.stack import (
    StackConfig,
    StackError,
    console_admin_key,
    default_tenants_file,
    nats_config,
    read_env_file,
    service_env,
)


def test_service_env_precedence(tmp_path: Path) -> None:
    cfg = StackConfig(data_dir=tmp_path / "data", nats_port=14999, http_port_base=9000,
                      smtp_port=2600, log_level="DEBUG",
                      extra_env={"SMTP_MAX_RECIPIENTS": "5", "BLOB_BACKEND": "fs"})
    environ = {
        "PATH": "/usr/bin",
        "SMTP_MAX_RECIPIENTS": "50",  # overridden by --env-file
        "SMTP_HOSTNAME": "mx.example",  # passed on
        "HTTP_HOST": "0.0.0.0",  # the user's choice wins over the default
        "NATS_URL": "nats://elsewhere:4222",  # wiring: the stack's own server wins
        "HTTP_PORT": "1",
        "DATABASE_URL": "postgresql+asyncpg://x/y",
    }
    ingress = service_env(BY_NAME["smtp-ingress"], cfg, environ)
    assert ingress["PATH"] == "/usr/bin"
    assert ingress["SMTP_HOSTNAME"] == "mx.example"
    assert ingress["SMTP_MAX_RECIPIENTS"] == "5"
    assert ingress["HTTP_HOST"] == "0.0.0.0"
    assert ingress["BLOB_BACKEND"] == "fs"
    assert ingress["BLOB_FS_ROOT"] == str((tmp_path / "data" / "blobs").resolve())
    assert ingress["NATS_URL"] == "nats://127.0.0.1:14999"
    assert ingress["HTTP_PORT"] == "9000"
    assert ingress["SMTP_PORT"] == "2600"
    assert ingress["LOG_LEVEL"] == "DEBUG"
    assert ingress["OTEL_SERVICE_NAME"] == "smtp-ingress"
    assert ingress["DATABASE_URL"] == (
        f"sqlite+aiosqlite:///{(tmp_path / 'data').resolve()}/smtp_ingress.db")

    extractor = service_env(BY_NAME["attachment-extractor"], cfg, {})
    assert extractor["HTTP_PORT"] == "9001"
    assert extractor["HTTP_HOST"] == "127.0.0.1"
    assert extractor["BLOB_BACKEND"] == "fs"
    assert "SMTP_PORT" not in extractor
    assert extractor["DATABASE_URL"].endswith("/attachment_extractor.db")


def test_read_env_file(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text(
        "# comment\n\nexport LOG_LEVEL=DEBUG\nSMTP_HOSTNAME='mx.example'\n"
        'EMPTY=\nWITH_COMMENT=value # trailing\nQUOTED="a # b"\n'
    )
    assert read_env_file(path) == {
        "LOG_LEVEL": "DEBUG", "SMTP_HOSTNAME": "mx.example", "EMPTY": "",
        "WITH_COMMENT": "value", "QUOTED": "a # b",
    }
    path.write_text("not a setting\n")
    with pytest.raises(StackError, match=r"\.env:1: expected KEY=VALUE"):
        read_env_file(path)
    with pytest.raises(StackError, match="cannot read env file"):
        read_env_file(tmp_path / "missing.env")


def test_nats_config_is_durable_and_local(tmp_path: Path) -> None:
    cfg = StackConfig(nats_port=14222, nats_monitor_port=18222)
    text = nats_config(cfg, tmp_path / "js", tmp_path / "nats.pid")
    assert 'listen: "127.0.0.1:14222"' in text
    assert 'http: "127.0.0.1:18222"' in text
    assert f'store_dir: "{tmp_path / "js"}"' in text
    assert "  sync_interval: always" in text


def test_default_tenants_file_is_found_from_a_subdirectory(tmp_path: Path) -> None:
    seed = tmp_path / "deploy" / "tenants.yaml"
    seed.parent.mkdir()
    seed.write_text("tenants: []\n")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    assert default_tenants_file(nested) == seed


def test_the_console_admin_key_is_made_once_per_data_dir(tmp_path: Path) -> None:
    key = console_admin_key(tmp_path)
    assert re.fullmatch(r"pr_[0-9a-f]{12}_[A-Za-z0-9_-]{32}", key)
    path = tmp_path / "console-admin-key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert console_admin_key(tmp_path) == key
    other = tmp_path / "other"
    other.mkdir()
    assert console_admin_key(other) != key
