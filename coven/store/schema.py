"""The SQLite schema as numbered migrations, applied in order and recorded in the database.

A newer daemon opens an older store by running only the migrations it lacks; a store
written by a newer daemon than this one is refused rather than misread.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from coven.wire import timestamp

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            project_root TEXT NOT NULL,
            harness TEXT NOT NULL,
            title TEXT NOT NULL,
            status TEXT NOT NULL,
            exit_code INTEGER,
            archived_at TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            conversation_id TEXT,
            labels TEXT,
            visibility TEXT NOT NULL DEFAULT 'private',
            familiar_id TEXT,
            execution_binding_json TEXT,
            external INTEGER NOT NULL DEFAULT 0,
            transcript_path TEXT,
            transcript_indexed_at TEXT,
            cwd TEXT,
            rows INTEGER,
            cols INTEGER,
            last_seq INTEGER NOT NULL DEFAULT 0,
            pid INTEGER
        );
        CREATE INDEX sessions_created ON sessions(created_at DESC, id DESC);
        CREATE TABLE events (
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            id TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            payload_json TEXT NOT NULL,
            created_at TEXT NOT NULL,
            redaction_status TEXT NOT NULL DEFAULT 'redacted',
            sensitive INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (session_id, seq)
        );
        CREATE INDEX events_created ON events(created_at);
        CREATE TABLE store_meta (key TEXT PRIMARY KEY, value TEXT);
        """,
    ),
)

LATEST = MIGRATIONS[-1][0]


class SchemaTooNew(Exception):
    """The store was written by a newer daemon; reading it could lose data."""


def create_private(path: Path) -> None:
    """Make the database file exist as 0600 before SQLite opens it, so its WAL and shm are 0600 too.

    Call it only while this process has no connection to the file: closing any descriptor of it
    drops every POSIX lock the process holds there, and a daemon without its shared lock lets an
    outside `sqlite3` reader take the database for its last user and delete the WAL under it.
    """
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
    os.chmod(path, 0o600)


def connect(path: Path) -> sqlite3.Connection:
    """Open the store with the pragmas every connection needs; never opens the file itself."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def migrate(conn: sqlite3.Connection) -> list[int]:
    """Apply what is missing; return the versions applied now."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    have = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    if have and max(have) > LATEST:
        raise SchemaTooNew(f"store schema version {max(have)} is newer than this daemon's {LATEST}")
    applied = []
    for version, script in MIGRATIONS:
        if version in have:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in filter(str.strip, script.split(";")):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", (version, timestamp())
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(version)
    return applied
