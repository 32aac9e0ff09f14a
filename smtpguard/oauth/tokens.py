"""Tokens encrypted at rest: one file per account under `<state>/oauth/`, 0600, written atomically.

The key is a random 256-bit key in `<state>/oauth/key` (0600), created on first use and
owned by the service user, so refreshes run without any person present. Each file is
AES-256-GCM with the account name as associated data: a file copied over another
account's does not decrypt, so nobody with write access to the directory can make
bob send with alice's sign-in. Writes go to a temporary file, are fsynced, then renamed
over the old one, so a crash leaves either the old tokens or the new ones, never half.
Nothing here logs; error messages name files and accounts, never contents.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import stat
from pathlib import Path
from urllib.parse import quote, unquote

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from smtpguard.oauth.errors import SignInRequired, StoreError

_MAGIC = b"SGT1"  # format version of a token file
_NONCE = 12
_SUFFIX = ".tok"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` (mode 0600): temporary file, fsync, rename, fsync the directory."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


class TokenStore:
    """Encrypted blobs by account name. Nothing touches the disk until the first call."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / "oauth"
        self.key_file = self.dir / "key"
        self._aead: AESGCM | None = None

    # -- key ---------------------------------------------------------------------------
    def _ensure_dir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)

    def _cipher(self) -> AESGCM:
        if self._aead is None:
            self._ensure_dir()
            if not self.key_file.exists():
                self._create_key()
            self._aead = AESGCM(self._read_key())
        return self._aead

    def _create_key(self) -> None:
        # Written aside then hard-linked: link() never replaces, so two processes
        # starting together agree on one key (the loser reads the winner's).
        tmp = self.dir / f".key.{secrets.token_hex(6)}.tmp"
        atomic_write(tmp, base64.b64encode(AESGCM.generate_key(bit_length=256)) + b"\n")
        try:
            os.link(tmp, self.key_file)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        _fsync_dir(self.dir)

    def _read_key(self) -> bytes:
        mode = stat.S_IMODE(self.key_file.stat().st_mode)
        if mode & 0o077:
            raise StoreError(str(self.key_file), f"key file is readable by others (mode {mode:o}); chmod 600 it")
        try:
            key = base64.b64decode(self.key_file.read_bytes().strip(), validate=True)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise StoreError(str(self.key_file), "key file is not a base64 256-bit key")
        return key

    # -- files -------------------------------------------------------------------------
    def _path(self, name: str) -> Path:
        if not name or name.startswith("."):
            raise ValueError(f"invalid account name {name!r}")
        return self.dir / (quote(name, safe="@+-_") + _SUFFIX)

    @staticmethod
    def _aad(name: str) -> bytes:
        return b"smtpguard-oauth\0" + name.encode("utf-8")

    def read(self, name: str) -> bytes | None:
        """The decrypted blob, or None if the account has none."""
        path = self._path(name)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        cipher = self._cipher()
        if not blob.startswith(_MAGIC):
            raise SignInRequired(name, f"{path} is not a smtpguard token file")
        nonce, sealed = blob[len(_MAGIC) : len(_MAGIC) + _NONCE], blob[len(_MAGIC) + _NONCE :]
        try:
            return cipher.decrypt(nonce, sealed, self._aad(name))
        except InvalidTag:
            raise SignInRequired(name, f"{path} cannot be decrypted with {self.key_file}") from None

    def write(self, name: str, data: bytes) -> None:
        """Replace the account's blob (the newest refresh token replaces the old one)."""
        path = self._path(name)
        nonce = os.urandom(_NONCE)
        sealed = self._cipher().encrypt(nonce, data, self._aad(name))
        atomic_write(path, _MAGIC + nonce + sealed)

    def delete(self, name: str) -> bool:
        try:
            self._path(name).unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(self.dir)
        return True

    def names(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(unquote(p.name[: -len(_SUFFIX)]) for p in self.dir.glob("*" + _SUFFIX))

    def stamp(self, name: str) -> tuple[int, int] | None:
        """Changes when another process (`account login`) rewrote the file."""
        try:
            st = self._path(name).stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_ino)
