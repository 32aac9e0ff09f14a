"""Salted slow hashes for `auth = "local"` accounts (stdlib scrypt).

Format: ``scrypt$N$r$p$salt$hash`` (base64), so parameters can be raised
later without breaking stored hashes.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os

_N, _R, _P = 2**14, 8, 1  # ~16 MiB and ~50 ms per hash on a small server


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


@functools.cache
def unknown_user_hash() -> str:
    """Checked against when the user does not exist, so both cost the same
    (made on first use, not at import: scrypt takes ~50 ms)."""
    return hash_password("no such user: this hash is only ever compared, never matched")


def verify_password(password: str | bytes, stored: str) -> bool:
    """Constant-time check of a password against a stored hash; False if malformed."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        secret = password if isinstance(password, bytes) else password.encode("utf-8")
        actual = hashlib.scrypt(secret, salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)
