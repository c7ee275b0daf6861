"""Pure logic: IMAP response parsing, accounts as the API takes them, backoff, signatures."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from postroom_mailbox_sync import handlers as h
from postroom_mailbox_sync.config import MailboxSyncSettings, parse_secrets


def test_parse_select_reads_uidvalidity_uidnext_highestmodseq() -> None:
    lines = [b"FLAGS (\\Answered \\Seen)", b"3 EXISTS", b"0 RECENT",
             b"OK [UIDVALIDITY 1796121462] UIDs valid", b"OK [UIDNEXT 4] Predicted next UID",
             b"OK [HIGHESTMODSEQ 7] Highest", b"[READ-WRITE] Select completed."]
    assert h.parse_select(lines) == h.FolderState(1796121462, 4, 7, 3)
    with pytest.raises(ValueError):
        h.parse_select([b"OK done"])


def test_parse_search_as_aioimaplib_hands_it_over() -> None:
    assert h.parse_search([b"4 2 9", b"Search completed (0.001 + 0.000 secs)."]) == [2, 4, 9]
    assert h.parse_search([b"SEARCH 1 3 (MODSEQ 12)", b"Search completed."]) == [1, 3]
    assert h.parse_search([b"", b"Search completed."]) == []


def test_parse_fetch_pairs_each_literal_with_its_uid() -> None:
    lines = [b"1 FETCH (UID 5 BODY[] {5}", bytearray(b"hello"), b")",
             b"2 FETCH (FLAGS (\\Seen))",  # unsolicited: no body
             b"3 FETCH (BODY[] {3}", bytearray(b"abc"), b" UID 9)",  # UID after the literal
             b"Fetch completed."]
    assert h.parse_fetch(lines) == [h.Fetched(5, b"hello"), h.Fetched(9, b"abc")]


def test_backoff_is_capped_and_jittered() -> None:
    rng = random.Random(7)
    delays = [h.backoff(n, 1.0, 30.0, rng) for n in range(1, 12)]
    assert all(d <= 30.0 for d in delays)
    assert delays[0] <= 1.0 and max(delays) > 15.0
    assert len({round(d, 6) for d in delays[6:]}) > 1  # jitter at the cap


def test_horizon_and_imap_date() -> None:
    now = datetime(2026, 12, 1, 10, tzinfo=UTC)
    assert h.horizon(None, 0, now) is None
    assert h.horizon(None, 7, now) == datetime(2026, 11, 24, 10, tzinfo=UTC)
    assert h.imap_date(datetime(2026, 3, 5, tzinfo=UTC)) == "5-Mar-2026"


def test_signature_checks() -> None:
    body = b"raw mail"
    good = h.sign("k" * 20, "1000", body)
    assert h.check_signature("k" * 20, "1000", good, body, now=1010, tolerance=300) is None
    assert "replay" in h.check_signature("k" * 20, "1000", good, body, now=2000,
                                         tolerance=300)
    assert h.check_signature("x" * 20, "1000", good, body, now=1000, tolerance=300)
    assert h.check_signature("k" * 20, None, good, body, now=1000, tolerance=300)


def test_account_validation() -> None:
    account = h.AccountIn(tenant="acme", mailbox="Support", host="imap.example.com",
                          username="ai@acme.example", password="p")
    assert account.address == "ai@acme.example" and account.mailbox == "support"
    assert account.default_port == 993 and account.derived_id().startswith("acme-support-")
    with pytest.raises(ValidationError, match="exactly one"):
        h.AccountIn(tenant="acme", mailbox="s", host="h", username="u@x", password="p",
                    oauth_token="t")
    with pytest.raises(ValidationError, match="address"):
        h.AccountIn(tenant="acme", mailbox="s", host="h", username="plainuser", password="p")
    with pytest.raises(ValidationError, match="forbidden"):
        h.AccountIn(tenant="acme", mailbox="s", host="h", username="u@x", password="p",
                    folders=['IN"BOX'])
    with pytest.raises(ValidationError, match="webhook_secret"):
        h.AccountIn(kind="provider", tenant="acme", mailbox="s", host="https://api",
                    username="u@x", oauth_token="t")


def test_empty_variables_are_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IMAP_HOST", "IMAP_PORT", "EMAIL_ADDRESS", "EMAIL_PASSWORD",
                 "MAILBOX_SYNC_TENANT", "MAILBOX_SYNC_SECRET_KEY", "MAILBOX_SYNC_PUBLIC_URL"):
        monkeypatch.setenv(name, "")  # as docker-compose passes `${IMAP_PORT:-}`
    settings = MailboxSyncSettings()
    assert settings.imap_port is None and settings.imap_host is None


def test_settings() -> None:
    assert parse_secrets("acme/support=s1, globex=s2") == {
        ("acme", "support"): "s1", ("globex", "*"): "s2"}
    with pytest.raises(ValueError):
        parse_secrets("acme")
    with pytest.raises(ValidationError):
        MailboxSyncSettings(imap_idle_renew_seconds=1800)  # RFC 2177: renew before 29 min
    with pytest.raises(ValidationError, match="EMAIL_ADDRESS"):
        MailboxSyncSettings(imap_host="imap.example.com")
    assert MailboxSyncSettings(imap_folder="INBOX, Support").folders == ["INBOX", "Support"]


def test_vault_seals_and_rotates_keys(tmp_path) -> None:
    from cryptography.fernet import Fernet

    from postroom_mailbox_sync.vault import SecretUnreadable, Vault

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = Vault([old]).seal("imap-password")
    assert b"imap-password" not in token
    rotated = Vault([new, old])  # the first key encrypts, every key decrypts
    assert rotated.open(token) == "imap-password"
    assert Vault([new]).open(rotated.seal("x")) == "x"
    with pytest.raises(SecretUnreadable, match="add the account again"):
        Vault([new]).open(token)
    generated = Vault.from_settings(None, tmp_path / "sub" / "key")
    assert (tmp_path / "sub" / "key").stat().st_mode & 0o777 == 0o600
    again = Vault.from_settings(None, tmp_path / "sub" / "key")  # the same key on restart
    assert again.open(generated.seal("y")) == "y"
