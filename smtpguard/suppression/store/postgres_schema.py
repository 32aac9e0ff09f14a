"""The PostgreSQL store's schema: versioned migrations, applied once per database.

Equal in meaning to SQLite's (sqlite.MIGRATIONS): import batches, entries keyed
by the canonical key, the audit log (with the relay that wrote each event),
local users, and meta. Times stay ISO 8601 text, as in SQLite, so both
backends compare and return them the same way. Text that is sorted or
compared (keys, sources) uses the "C" collation: byte order, as SQLite sorts,
whatever locale the database was created with.
"""

from __future__ import annotations

from typing import Any

# Each item moves the schema from version i to i+1 (the row in schema_version).
MIGRATIONS: list[str] = [
    """
    CREATE TABLE batches (
        id      bigserial PRIMARY KEY,
        source  text COLLATE "C" NOT NULL,
        reason  text NOT NULL,
        added   text NOT NULL,
        expires text              -- YYYY-MM-DD: no longer blocks from that day on
    );
    CREATE TABLE entries (
        key      text COLLATE "C" PRIMARY KEY,   -- canonical key: the one unique index
        kind     text NOT NULL CHECK (kind IN ('address', 'domain')),
        original text COLLATE "C",               -- as imported, or NULL when it is the key itself
        -- batches (id), written in the same transaction. Not a checked foreign key, as in
        -- SQLite (foreign_keys off): its per-row trigger tripled a million-row import.
        batch    bigint NOT NULL
    );
    CREATE TABLE events (
        id         bigserial PRIMARY KEY,
        time       text NOT NULL,
        action     text NOT NULL,
        sender     text NOT NULL,
        recipient  text NOT NULL,
        entry      text NOT NULL,
        source     text NOT NULL,
        client     text NOT NULL,
        "user"     text NOT NULL,
        message_id text NOT NULL,
        relay      text NOT NULL    -- which relay wrote it: several share one log
    );
    CREATE INDEX events_time ON events (time);
    CREATE TABLE users (
        name    text PRIMARY KEY,
        hash    text NOT NULL,
        created text NOT NULL
    );
    CREATE TABLE meta (
        name  text PRIMARY KEY,
        value text NOT NULL
    );
    """,
    """
    -- The web page's accounts (as SQLite's migration 2).
    CREATE TABLE web_roles (
        name text PRIMARY KEY REFERENCES users (name) ON DELETE CASCADE,
        role text NOT NULL CHECK (role IN ('viewer', 'editor', 'admin'))
    );
    """,
    """
    -- The sender addresses a local user may use, one per line ('' = any; as SQLite's migration 3).
    ALTER TABLE users ADD COLUMN addresses text NOT NULL DEFAULT '';
    """,
    """
    -- HTTP API bearer tokens: only a SHA-256 of each token (as SQLite's migration 4).
    CREATE TABLE tokens (
        name    text PRIMARY KEY,
        scope   text NOT NULL CHECK (scope IN ('read', 'write')),
        hash    text NOT NULL UNIQUE,
        created text NOT NULL
    );
    """,
    """
    -- Allow entries, exceptions inside a blocked domain (as SQLite's migration 5).
    ALTER TABLE entries DROP CONSTRAINT entries_kind_check;
    ALTER TABLE entries ADD CONSTRAINT entries_kind_check CHECK (kind IN ('address', 'domain', 'allow'));
    """,
]

# Several relays may open a fresh database at once: one migrates, the others wait.
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('smtpguard schema'))"


class SchemaError(Exception):
    """The database's schema is not one this smtpguard can use."""


async def schema_version(conn: Any) -> int | None:
    """The schema's version, or None when the database has no smtpguard schema."""
    if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
        return None
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))


async def migrate(conn: Any, *, create: bool = True) -> int:
    """Bring the schema up to date in one transaction; the version it is now at."""
    async with conn.transaction():
        await conn.execute(_LOCK)
        version = await schema_version(conn)
        if version is None:
            if not create:
                raise SchemaError("no smtpguard schema in this database (import a list first)")
            await conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
            version = 0
        if version > len(MIGRATIONS):
            raise SchemaError(
                f"schema version {version} is newer than this smtpguard knows ({len(MIGRATIONS)}); upgrade smtpguard"
            )
        for target in range(version + 1, len(MIGRATIONS) + 1):
            await conn.execute(MIGRATIONS[target - 1])
            await conn.execute("DELETE FROM schema_version")
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", target)
        return len(MIGRATIONS)
