"""Reaching the PostgreSQL store: settings to a connection, and messages that name it safely.

Connection settings are PostgreSQL's own: a `postgresql://` URL (several
hosts, `sslmode`, `target_session_attrs`, `passfile`, ...) and the libpq
environment variables (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGPASSFILE,
PGSSLMODE, ...), which asyncpg honours. A password may also come from
`[store] password_file` or the systemd credential `store-password`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from smtpguard.suppression.addresses import MatchRules

from .base import StoreError

if TYPE_CHECKING:
    from smtpguard.config import Settings

    from .postgres import PostgresStore

CREDENTIAL = "store-password"  # systemd: LoadCredential=store-password:/etc/smtpguard/store-password


def describe_server(dsn: str | None) -> str:
    """Where the store is, for messages: host, port and database, never the user's password."""
    parts = urlsplit(dsn or "")
    query = parse_qs(parts.query)
    hosts = parts.netloc.rpartition("@")[2] or ",".join(query.get("host", [])) or os.environ.get("PGHOST", "")
    if hosts and ":" not in hosts.split(",")[0] and not hosts.startswith("/"):
        hosts += f":{os.environ.get('PGPORT', '5432')}"
    database = parts.path.lstrip("/") or os.environ.get("PGDATABASE", "")
    return f"postgresql://{hosts or 'localhost'}/{database}"


def redact_url(url: str) -> str:
    """`url` with its password (if any) as ***: for `config show`, which prints the settings."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return parts._replace(netloc=f"{user}:***@{hosts}").geturl()


def describe_error(server: str, secrets: Sequence[str], exc: BaseException) -> StoreError:
    text = str(exc) or ("no answer in time" if isinstance(exc, TimeoutError) else type(exc).__name__)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return StoreError(f"store {server}: {text}")


def store_password(password_file: Path | None) -> str | None:
    """[store] password_file, else the systemd credential, else None (the URL or libpq decides)."""
    path = password_file
    if path is None and os.environ.get("CREDENTIALS_DIRECTORY"):
        candidate = Path(os.environ["CREDENTIALS_DIRECTORY"]) / CREDENTIAL
        path = candidate if candidate.is_file() else None
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise StoreError(f"store password file {path}: {exc.strerror}") from None


async def open_url(settings: Settings, *, create: bool = True, rules: MatchRules | None = None) -> PostgresStore:
    """The PostgreSQL store `[store] url` names; the relay's name from the settings."""
    try:
        from .postgres import PostgresStore
    except ImportError:
        raise StoreError(
            "[store] url needs the PostgreSQL driver: pip install 'smtpguard[postgres]' (asyncpg)"
        ) from None
    return await PostgresStore.open(
        settings.store.url,
        create=create,
        rules=settings.matching if rules is None else rules,
        relay=settings.store.relay_name or settings.server.hostname,
        password=store_password(settings.store.password_file),
    )
