"""The encrypted token store: modes, atomic replace, account binding, a clear error on a bad key."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from smtpguard.oauth.errors import SignInRequired, StoreError
from smtpguard.oauth.tokens import TokenStore


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_nothing_on_disk_until_first_use(state_dir: Path) -> None:
    store = TokenStore(state_dir)
    assert not state_dir.exists()
    assert store.read("alice") is None
    assert store.names() == []
    assert not (state_dir / "oauth" / "key").exists()


def test_round_trip_modes_and_no_plaintext(store: TokenStore) -> None:
    secret = b'{"refresh_token": "rt-very-secret-value"}'
    store.write("alice@contoso.test", secret)
    assert store.read("alice@contoso.test") == secret
    assert mode(store.dir) == 0o700
    assert mode(store.key_file) == 0o600
    files = list(store.dir.iterdir())
    assert sorted(p.name for p in files) == ["alice@contoso.test.tok", "key"]  # no temporary file left
    for path in files:
        assert mode(path) == 0o600
        assert b"rt-very-secret-value" not in path.read_bytes()
    assert store.names() == ["alice@contoso.test"]


def test_newest_replaces_old(store: TokenStore) -> None:
    store.write("alice", b"rt-old")
    first = store.stamp("alice")
    store.write("alice", b"rt-new")
    assert store.read("alice") == b"rt-new"
    assert store.stamp("alice") != first  # a running relay sees another process's write
    assert store.delete("alice") and store.read("alice") is None and not store.delete("alice")


def test_same_key_for_a_second_process(state_dir: Path) -> None:
    TokenStore(state_dir).write("alice", b"tokens")
    assert TokenStore(state_dir).read("alice") == b"tokens"


def test_file_copied_over_another_account_does_not_decrypt(store: TokenStore) -> None:
    store.write("alice", b"alice's tokens")
    store.write("bob", b"bob's tokens")
    os.replace(store.dir / "alice.tok", store.dir / "bob.tok")
    with pytest.raises(SignInRequired, match="cannot be decrypted"):
        store.read("bob")


def test_other_key_means_sign_in_again(state_dir: Path) -> None:
    TokenStore(state_dir).write("alice", b"tokens")
    key = state_dir / "oauth" / "key"
    key.unlink()
    with pytest.raises(SignInRequired) as refused:
        TokenStore(state_dir).read("alice")
    assert refused.value.command == "smtpguard account login alice"


def test_key_readable_by_others_is_refused(state_dir: Path) -> None:
    TokenStore(state_dir).write("alice", b"tokens")
    os.chmod(state_dir / "oauth" / "key", 0o644)
    with pytest.raises(StoreError, match="chmod 600"):
        TokenStore(state_dir).read("alice")


def test_account_names_stay_inside_the_directory(store: TokenStore) -> None:
    for name in ("", ".key", "../x"):
        with pytest.raises(ValueError):
            store.write(name, b"x")
    store.write("a/../../b", b"x")
    assert store.names() == ["a/../../b"]
    assert [p.name for p in store.dir.iterdir() if p.name != "key"] == ["a%2F..%2F..%2Fb.tok"]
