"""Configuration from the environment: defaults, and a clear error for every bad combination."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from postroom_runtime import ConfigError, RuntimeSettings, load_settings
from postroom_smtp_ingress.config import IngressSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("SMTP_", "TENANTS_", "HTTP_", "OTEL_", "DATABASE_")):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    s = load_settings(IngressSettings)
    assert (s.otel_service_name, s.http_port) == ("smtp-ingress", 8025)
    assert (s.smtp_host, s.smtp_port, s.smtp_hostname) == ("127.0.0.1", 1025, "postroom.local")
    assert (s.smtp_tls_port, s.smtp_tls_cert, s.smtp_tls_key) == (0, None, None)
    assert s.smtp_max_message_size == 26_214_400
    assert (s.smtp_max_recipients, s.smtp_max_connections_per_ip, s.smtp_timeout) == (100, 20, 300)
    assert not s.smtp_require_tls and not s.smtp_auth_required and s.auth_users == {}
    assert s.extra_domains == frozenset()
    assert s.database_url == "sqlite+aiosqlite:///var/smtp_ingress.db"
    assert s.tls_context() is None
    # raw MIME up to 512 KiB goes to the one-round-trip KV tier (the runtime's default is off)
    assert s.blob_small_max_bytes == 524_288 and RuntimeSettings().blob_small_max_bytes == 0
    assert s.smtp_workers == 1  # one process unless SMTP_WORKERS says more
    # loopback is exempt from the per-IP cap, as Postfix's default $mynetworks
    assert [str(n) for n in s.trusted_networks] == ["127.0.0.0/8", "::1/128"]


def test_trusted_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_TRUSTED_NETWORKS", " 10.0.0.0/8, 192.0.2.7 ,2001:db8::/32,")
    s = load_settings(IngressSettings)
    assert [str(n) for n in s.trusted_networks] == ["10.0.0.0/8", "192.0.2.7/32",
                                                     "2001:db8::/32"]
    monkeypatch.setenv("SMTP_TRUSTED_NETWORKS", "")
    assert load_settings(IngressSettings).trusted_networks == ()  # nobody is exempt


def test_from_environment(monkeypatch: pytest.MonkeyPatch, server_cert: tuple[Path, Path]) -> None:
    cert, key = server_cert
    monkeypatch.setenv("SMTP_DOMAINS", " Shared.Example, other.example. ,")
    monkeypatch.setenv("SMTP_TLS_CERT", str(cert))
    monkeypatch.setenv("SMTP_TLS_KEY", str(key))
    monkeypatch.setenv("SMTP_AUTH_USERS", "alice:pa:ss,bob:pw")
    monkeypatch.setenv("SMTP_REQUIRE_TLS", "true")
    s = load_settings(IngressSettings)
    assert s.extra_domains == {"shared.example", "other.example"}
    assert s.auth_users == {"alice": "pa:ss", "bob": "pw"}
    assert "pa:ss" not in repr(s)  # secrets stay out of logs and tracebacks
    assert s.tls_context() is not None


def test_empty_variables_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # as in .env.example: `SMTP_TLS_CERT=` and friends
    for name in ("SMTP_TLS_CERT", "SMTP_TLS_KEY", "TENANTS_SEED_FILE", "SMTP_AUTH_USERS",
                 "SMTP_DOMAINS"):
        monkeypatch.setenv(name, "")
    s = load_settings(IngressSettings)
    assert (s.smtp_tls_cert, s.smtp_tls_key, s.tenants_seed_file) == (None, None, None)
    assert s.auth_users == {} and s.extra_domains == frozenset()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SMTP_TLS_CERT": "{cert}"}, "SMTP_TLS_KEY is required when SMTP_TLS_CERT is set"),
        ({"SMTP_TLS_KEY": "{key}"}, "SMTP_TLS_KEY is set but SMTP_TLS_CERT is not"),
        ({"SMTP_TLS_CERT": "/nonexistent.pem", "SMTP_TLS_KEY": "{key}"}, "SMTP_TLS_CERT"),
        ({"SMTP_TLS_CERT": "{key}", "SMTP_TLS_KEY": "{key}"}, "cannot load certificate"),
        ({"SMTP_REQUIRE_TLS": "true"}, "SMTP_REQUIRE_TLS=true needs SMTP_TLS_CERT"),
        ({"SMTP_TLS_PORT": "4650"}, "SMTP_TLS_PORT needs SMTP_TLS_CERT"),
        ({"SMTP_AUTH_USERS": "alice:pw"}, "AUTH is offered only over TLS"),
        ({"SMTP_AUTH_USERS": "alice", "SMTP_TLS_CERT": "{cert}", "SMTP_TLS_KEY": "{key}"},
         "user:password"),
        ({"SMTP_AUTH_REQUIRED": "true"}, "SMTP_AUTH_REQUIRED=true needs SMTP_AUTH_USERS"),
        ({"SMTP_PORT": "70000"}, "SMTP_PORT"),
        ({"SMTP_MAX_RECIPIENTS": "0"}, "SMTP_MAX_RECIPIENTS"),
        ({"TENANTS_SEED_FILE": "/nonexistent.yaml"}, "TENANTS_SEED_FILE"),
        ({"SMTP_TRUSTED_NETWORKS": "127.0.0.0/8,localhost"}, "SMTP_TRUSTED_NETWORKS"),
        ({"SMTP_TRUSTED_NETWORKS": "10.0.0.0/33"}, "'10.0.0.0/33' is not a network"),
    ],
)
def test_bad_configuration_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, server_cert: tuple[Path, Path], env: dict[str, str],
    message: str,
) -> None:
    cert, key = server_cert
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(cert=cert, key=key))
    with pytest.raises(ConfigError) as err:
        load_settings(IngressSettings)
    assert message in str(err.value)
    assert err.value.code == 2


def test_entry_point_exits_2_on_bad_configuration(tmp_path: Path) -> None:
    bad_seed = tmp_path / "tenants.yaml"
    bad_seed.write_text("tenants: [{slug: Not A Slug, domains: []}]\n")
    for env, expected in (
        ({"SMTP_TLS_CERT": str(bad_seed)}, "SMTP_TLS_KEY"),
        ({"TENANTS_SEED_FILE": str(bad_seed)}, "TENANTS_SEED_FILE"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "postroom_smtp_ingress"],
            env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=60,
        )
        assert proc.returncode == 2, proc.stderr
        assert expected in proc.stderr
