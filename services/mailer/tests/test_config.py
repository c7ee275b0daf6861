"""Settings: the relay URL, the retry schedule, DKIM settings that go together."""

from __future__ import annotations

from pathlib import Path

import pytest

from postroom_mailer.app import build_runtime, dkim_signer
from postroom_mailer.config import MailerSettings, parse_schedule
from postroom_mailer.relay import parse_relay_url
from postroom_runtime import ConfigError, load_settings


def test_schedule_units():
    assert parse_schedule("5s,30s,2m,10m,30m,2h") == (5, 30, 120, 600, 1800, 7200)
    assert parse_schedule("500ms, 1.5s,3") == (0.5, 1.5, 3.0)
    assert parse_schedule("") == ()
    with pytest.raises(ValueError, match="not a duration"):
        parse_schedule("5s,soon")


def test_bad_schedule_names_the_variable(monkeypatch):
    monkeypatch.setenv("MAILER_RETRY_SCHEDULE", "5s,never")
    with pytest.raises(ConfigError, match="MAILER_RETRY_SCHEDULE"):
        load_settings(MailerSettings)


@pytest.mark.parametrize(("url", "expected"), [
    ("smtp://relay.example:2525", ("relay.example", 2525, "plain", None, None)),
    ("smtp://relay.example", ("relay.example", 25, "plain", None, None)),
    ("smtp+starttls://u%40x:p%3Aw@relay.example", ("relay.example", 587, "starttls", "u@x",
                                                   "p:w")),
    ("smtps://relay.example", ("relay.example", 465, "tls", "env-user", "env-pass")),
])
def test_relay_url(url, expected):
    relay = parse_relay_url(url, username="env-user", password="env-pass")
    assert relay is not None
    got = (relay.host, relay.port, relay.security, relay.username, relay.password)
    if "@" not in url:
        expected = (*expected[:3], "env-user", "env-pass")
    assert got == expected
    assert "p:w" not in repr(relay) and "env-pass" not in repr(relay)


def test_no_relay_url_means_capture():
    assert parse_relay_url("") is None


@pytest.mark.parametrize("url", ["http://relay.example", "smtp://", "lmtp://x:24"])
def test_bad_relay_url_is_refused(url, monkeypatch):
    monkeypatch.setenv("MAILER_RELAY_URL", url)
    with pytest.raises(ConfigError, match="MAILER_RELAY_URL"):
        build_runtime(load_settings(MailerSettings), configure_logging=False)


def test_dkim_settings_go_together(tmp_path: Path):
    assert dkim_signer(MailerSettings()) is None
    with pytest.raises(ConfigError, match="go together"):
        dkim_signer(MailerSettings(mailer_dkim_domain="acme.example"))
    with pytest.raises(ConfigError, match="MAILER_DKIM_KEY_FILE"):
        dkim_signer(MailerSettings(mailer_dkim_domain="acme.example",
                                   mailer_dkim_selector="s",
                                   mailer_dkim_key_file=tmp_path / "missing.pem"))
    signer = dkim_signer(MailerSettings(mailer_dkim_domain="acme.example",
                                        mailer_dkim_selector="s",
                                        mailer_dkim_private_key="-----BEGIN..."))
    assert signer is not None and signer.key == b"-----BEGIN..."


def test_empty_optional_variables_are_unset(monkeypatch):
    for name in ("MAILER_DKIM_KEY_FILE", "MAILER_TEMPLATE_DIR", "MAILER_RELAY_CA_FILE",
                 "MAILER_ENVELOPE_FROM"):
        monkeypatch.setenv(name, "")
    settings = load_settings(MailerSettings)
    assert settings.mailer_dkim_key_file is None and settings.mailer_template_dir is None
    assert settings.mailer_envelope_from is None and settings.http_port == 8028
