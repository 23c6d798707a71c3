"""Worklist accounts (scrypt hashes, never plaintext), signed sessions and CSRF tokens."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cds.cli import main
from cds.config import Settings, SettingsError, load_settings
from cds.worklist.auth import PasswordHash, Signer, authenticate, hash_password, parse_users, same_token

PASSWORD = "correct horse battery"


def test_a_hashed_password_verifies_and_a_wrong_one_does_not() -> None:
    stored = PasswordHash.parse(hash_password(PASSWORD))
    assert stored.verify(PASSWORD)
    assert not stored.verify(PASSWORD + "x")


def test_two_hashes_of_one_password_differ_by_their_salt() -> None:
    assert hash_password(PASSWORD) != hash_password(PASSWORD)


def test_accounts_are_user_colon_hash_and_unknown_users_fail() -> None:
    users = parse_users([f"alice:{hash_password(PASSWORD)}"])
    assert authenticate(users, "alice", PASSWORD)
    assert not authenticate(users, "alice", "wrong password")
    assert not authenticate(users, "mallory", PASSWORD)


@pytest.mark.parametrize(
    "entry",
    [
        "alice:plaintext-password",
        "alice",
        ":scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA",
        "alice:scrypt$1024$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA",  # n too small
        "alice:scrypt$16384$8$1$AAAA$AAAAAAAAAAAAAAAAAAAAAA",  # salt too short
    ],
)
def test_a_plaintext_or_weak_account_is_refused_by_the_settings(entry: str) -> None:
    with pytest.raises(ValidationError):
        Settings(worklist_users=[entry])


def test_a_refused_account_is_reported_without_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDS_WORKLIST_USERS", "alice:hunter2-plaintext")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "CDS_WORKLIST_USERS" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_the_cli_prints_a_hash_that_the_settings_accept(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["worklist", "hash-password", "--stdin"]) == 0
    printed = capsys.readouterr().out.strip()
    settings = Settings(worklist_users=f"alice:{printed}")
    assert authenticate(parse_users(settings.worklist_users), "alice", PASSWORD)


def test_the_cli_refuses_a_short_password(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["worklist", "hash-password", "--stdin"]) == 1
    assert capsys.readouterr().out == ""


def test_a_session_round_trips_and_expires() -> None:
    signer = Signer(b"k" * 32)
    token, session = signer.session("alice", now=1000.0, lifetime=600)
    loaded = signer.load_session(token, now=1500.0)
    assert loaded == session
    assert signer.load_session(token, now=1600.0) is None


def test_a_tampered_or_foreign_session_is_refused() -> None:
    signer = Signer(b"k" * 32)
    token, _ = signer.session("alice", now=1000.0, lifetime=600)
    payload, _, mac = token.partition(".")
    forged, _ = Signer(b"other" * 8).session("alice", now=1000.0, lifetime=600)
    assert signer.load_session(payload + "." + mac[::-1], now=1001.0) is None
    assert signer.load_session(forged, now=1001.0) is None
    assert signer.load_session("", now=1001.0) is None
    assert signer.load_session("garbage", now=1001.0) is None


def test_the_sign_in_form_token_is_not_a_session() -> None:
    signer = Signer(b"k" * 32)
    cookie, csrf = signer.login_token(now=1000.0)
    assert signer.load_session(cookie, now=1001.0) is None
    assert signer.load_login_csrf(cookie, now=1001.0) == csrf
    session, _ = signer.session("alice", now=1000.0, lifetime=600)
    assert signer.load_login_csrf(session, now=1001.0) is None


def test_csrf_tokens_compare_exactly_and_never_match_empty() -> None:
    assert same_token("abc", "abc")
    assert not same_token("abc", "abd")
    assert not same_token("", "")
    assert not same_token(None, "abc")
