"""The SQLite schema and its migrations (PRAGMA user_version)."""

from __future__ import annotations

# Each item moves the schema from version i to i+1 (PRAGMA user_version).
# Statements are split on semicolons: keep them out of the SQL comments.
MIGRATIONS: list[str] = [
    """
    -- What one import (or one `add`) shares: kept once, not on every row, so a
    -- million-row list stays ~50 MB and its B-tree fits the page cache.
    CREATE TABLE batches (
        id      INTEGER PRIMARY KEY,
        source  TEXT NOT NULL,
        reason  TEXT NOT NULL,
        added   TEXT NOT NULL,
        expires TEXT             -- YYYY-MM-DD: no longer blocks from that day on
    );
    CREATE TABLE entries (
        key      TEXT PRIMARY KEY,   -- canonical key: the one unique index
        kind     TEXT NOT NULL CHECK (kind IN ('address', 'domain')),
        original TEXT,               -- as imported, or NULL when it is the key itself
        batch    INTEGER NOT NULL REFERENCES batches (id)
    ) WITHOUT ROWID;
    CREATE TABLE events (
        id         INTEGER PRIMARY KEY,
        time       TEXT NOT NULL,
        action     TEXT NOT NULL,
        sender     TEXT NOT NULL,
        recipient  TEXT NOT NULL,
        entry      TEXT NOT NULL,
        source     TEXT NOT NULL,
        client     TEXT NOT NULL,
        user       TEXT NOT NULL,
        message_id TEXT NOT NULL
    );
    CREATE INDEX events_time ON events (time);
    CREATE TABLE users (
        name    TEXT PRIMARY KEY,
        hash    TEXT NOT NULL,
        created TEXT NOT NULL
    );
    CREATE TABLE meta (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    """
    -- The web page's accounts: a local user with a role may sign in there.
    CREATE TABLE web_roles (
        name TEXT PRIMARY KEY,  -- a users.name, removed with the user
        role TEXT NOT NULL CHECK (role IN ('viewer', 'editor', 'admin'))
    );
    """,
    """
    -- The sender addresses a local user may use in MAIL FROM, one per line
    -- ('' = any sender, as before). Set by `smtpguard user add NAME --address A`.
    ALTER TABLE users ADD COLUMN addresses TEXT NOT NULL DEFAULT ''
    """,
    """
    -- HTTP API bearer tokens (smtpguard token add): only a SHA-256 of each
    -- 256-bit random token is kept, so the file never holds a usable token.
    CREATE TABLE tokens (
        name    TEXT PRIMARY KEY,
        scope   TEXT NOT NULL CHECK (scope IN ('read', 'write')),
        hash    TEXT NOT NULL UNIQUE,
        created TEXT NOT NULL
    );
    """,
    """
    -- Allow entries (exceptions inside a blocked domain): SQLite cannot change a
    -- CHECK constraint in place, so the table is rebuilt with the new kind.
    CREATE TABLE entries_v2 (
        key      TEXT PRIMARY KEY,
        kind     TEXT NOT NULL CHECK (kind IN ('address', 'domain', 'allow')),
        original TEXT,
        batch    INTEGER NOT NULL REFERENCES batches (id)
    ) WITHOUT ROWID;
    INSERT INTO entries_v2 (key, kind, original, batch) SELECT key, kind, original, batch FROM entries;
    DROP TABLE entries;
    ALTER TABLE entries_v2 RENAME TO entries;
    """,
]
