"""The durable store: session rows and numbered events in SQLite.

Writes go through the single writer thread in the order they were made; reads run on the
reactor thread against a separate WAL connection (indexed, bounded queries that never wait
for the writer). What is queued but not yet committed lives in the supervisor's memory,
which answers for live sessions before this store is asked.
"""

from __future__ import annotations

import base64
import binascii
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import msgspec

from coven.store import schema
from coven.store.writer import Writer
from coven.wire import EventRecord, SessionRecord, decode_any, encode, timestamp

MiB = 1024 * 1024
CRITICAL_FREE_BYTES = 256 * MiB
WARNING_FREE_BYTES = 1024 * MiB
WAL_CHECKPOINT_BYTES = 16 * MiB
PRUNE_BATCH = 500
PRUNE_BATCHES = 10
STALE_CREATED_SECONDS = 600

_SESSION_COLUMNS = (
    "id, project_root, harness, title, status, exit_code, archived_at, created_at, updated_at, "
    "conversation_id, familiar_id, execution_binding_json, labels, visibility, external, "
    "transcript_path, cwd, rows, cols, last_seq"
)
_EVENT_COLUMNS = "seq, id, session_id, kind, payload_json, created_at"

_UPDATABLE = frozenset({"status", "exit_code", "updated_at", "pid", "rows", "cols", "archived_at"})


class SessionCursor(msgspec.Struct):
    created_at: str
    id: str


class BadCursor(ValueError):
    """A session-list cursor this store did not issue."""


def encode_cursor(record: SessionRecord) -> str:
    raw = encode(SessionCursor(record.created_at, record.id))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(text: str) -> SessionCursor:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return msgspec.json.decode(raw, type=SessionCursor)
    except (binascii.Error, ValueError, msgspec.DecodeError) as e:
        raise BadCursor(str(e)) from e


def _record(row: tuple[Any, ...]) -> SessionRecord:
    (id_, root, harness, title, status, exit_code, archived_at, created_at, updated_at,
     conversation_id, familiar_id, binding, labels, visibility, external, transcript,
     cwd, rows, cols, last_seq) = row
    return SessionRecord(
        id=id_,
        project_root=root,
        harness=harness,
        title=title,
        status=status,
        exit_code=exit_code,
        archived_at=archived_at,
        created_at=created_at,
        updated_at=updated_at,
        conversation_id=conversation_id,
        familiar_id=familiar_id,
        execution_binding=decode_any(binding) if binding else None,
        labels=decode_any(labels) if labels else [],
        visibility=visibility,
        external=bool(external),
        transcript_path=transcript,
        cwd=cwd if cwd is not None else msgspec.UNSET,
        rows=rows if rows is not None else msgspec.UNSET,
        cols=cols if cols is not None else msgspec.UNSET,
        last_seq=last_seq,
    )


def _optional(value: Any) -> Any:
    return None if value is msgspec.UNSET else value


class Store:
    """Opens the database, recovers what a previous daemon left, and owns reads and writes."""

    def __init__(self, reactor: Any, path: Path, writer: Writer | None = None) -> None:
        self.path = path
        self._reactor = reactor
        self._reader: sqlite3.Connection | None = None
        self.writer = writer or Writer(reactor, lambda: schema.connect(path))
        self.last_prune_at: str | None = None
        self.last_prune_monotonic: float | None = None
        self.last_checkpoint_at: str | None = None
        self.last_checkpoint_monotonic: float | None = None
        self.last_maintenance_error: str | None = None

    # lifecycle

    def open(self, started_at: str) -> dict[str, int]:
        """Migrate, mark what an earlier daemon left running, start the writer."""
        schema.create_private(self.path)
        conn = schema.connect(self.path)
        try:
            schema.migrate(conn)
            recovered = self._recover(conn, started_at)
        finally:
            conn.close()
        self._reader = schema.connect(self.path)
        self.writer.start()
        return recovered

    def close(self):
        """Commit everything queued, then close; returns a Deferred."""
        done = self.writer.stop()

        def closed(result: Any) -> Any:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            return result

        return done.addBoth(closed)

    @staticmethod
    def _recover(conn: sqlite3.Connection, started_at: str) -> dict[str, int]:
        stale = timestamp(time.time_ns() - STALE_CREATED_SECONDS * 1_000_000_000)
        conn.execute("BEGIN IMMEDIATE")
        orphaned = conn.execute(
            "UPDATE sessions SET status = 'orphaned', updated_at = ?, pid = NULL "
            "WHERE status = 'running' AND external = 0",
            (started_at,),
        ).rowcount
        failed = conn.execute(
            "UPDATE sessions SET status = 'failed', updated_at = ? WHERE status = 'created' AND created_at < ?",
            (started_at, stale),
        ).rowcount
        conn.execute("COMMIT")
        return {"orphaned": orphaned, "failed": failed}

    @property
    def reader(self) -> sqlite3.Connection:
        assert self._reader is not None, "store is not open"
        return self._reader

    # writes (queued, in order)

    def insert_session(self, record: SessionRecord, wait: bool = False):
        values = (
            record.id, record.project_root, record.harness, record.title, record.status,
            record.exit_code, record.archived_at, record.created_at, record.updated_at,
            record.conversation_id, record.familiar_id,
            encode(record.execution_binding).decode() if record.execution_binding is not None else None,
            encode(record.labels).decode(), record.visibility, int(record.external),
            record.transcript_path, _optional(record.cwd), _optional(record.rows),
            _optional(record.cols), record.last_seq, _optional(record.pid),
        )

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(f"INSERT INTO sessions ({_SESSION_COLUMNS}, pid) VALUES ({', '.join('?' * 21)})", values)

        return self.writer.submit(op, wait=wait)

    def update_session(self, session_id: str, wait: bool = False, **fields: Any):
        unknown = set(fields) - _UPDATABLE
        assert not unknown, unknown
        assignments = ", ".join(f"{name} = ?" for name in fields)
        values = (*fields.values(), session_id)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(f"UPDATE sessions SET {assignments} WHERE id = ?", values)

        return self.writer.submit(op, wait=wait)

    def append_events(self, events: list[EventRecord], wait: bool = False):
        """Queue events of one session; ``last_seq`` follows in the same transaction."""
        rows = [(e.session_id, e.seq, e.id, e.kind, e.payload_json, e.created_at) for e in events]
        cost = sum(len(e.payload_json) for e in events)
        session_id, last_seq = events[-1].session_id, events[-1].seq

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO events (session_id, seq, id, kind, payload_json, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.execute("UPDATE sessions SET last_seq = ? WHERE id = ?", (last_seq, session_id))

        return self.writer.submit(op, cost=cost, events=len(rows), wait=wait)

    # reads (committed rows only)

    def get_session(self, session_id: str) -> SessionRecord | None:
        row = self.reader.execute(f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return _record(row) if row else None

    def list_sessions(
        self, limit: int | None, after: SessionCursor | None, include_archived: bool
    ) -> list[SessionRecord]:
        """Newest first by (created_at, id); ``limit`` rows after the cursor, or all."""
        where, args = [], []
        if not include_archived:
            where.append("archived_at IS NULL")
        if after is not None:
            where.append("(created_at < ? OR (created_at = ? AND id < ?))")
            args += [after.created_at, after.created_at, after.id]
        sql = f"SELECT {_SESSION_COLUMNS} FROM sessions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [_record(row) for row in self.reader.execute(sql, args)]

    def read_events(self, session_id: str, after_seq: int, limit: int | None) -> list[EventRecord]:
        sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE session_id = ? AND seq > ? ORDER BY seq"
        args: list[Any] = [session_id, after_seq]
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [EventRecord(*row) for row in self.reader.execute(sql, args)]

    def event_seq(self, session_id: str, event_id: str) -> int | None:
        row = self.reader.execute(
            "SELECT seq FROM events WHERE session_id = ? AND id = ?", (session_id, event_id)
        ).fetchone()
        return row[0] if row else None

    # maintenance

    def free_disk_bytes(self) -> int:
        return shutil.disk_usage(self.path.parent).free

    def prune(self, retention_days: float):
        """Delete events older than the retention window, oldest first, in bounded batches.

        Runs on the writer thread; remaining events keep their seq. Returns a Deferred
        firing with the number of rows deleted.
        """
        cutoff = timestamp(time.time_ns() - int(retention_days * 86400 * 1e9))
        deleted = [0]

        def op(conn: sqlite3.Connection) -> None:
            deleted[0] = 0
            for _ in range(PRUNE_BATCHES):
                count = conn.execute(
                    "DELETE FROM events WHERE rowid IN "
                    "(SELECT rowid FROM events WHERE created_at < ? ORDER BY created_at LIMIT ?)",
                    (cutoff, PRUNE_BATCH),
                ).rowcount
                deleted[0] += count
                if count < PRUNE_BATCH:
                    break

        done = self.writer.submit(op, wait=True)
        assert done is not None

        def pruned(_: Any) -> int:
            self.last_prune_at = timestamp()
            self.last_prune_monotonic = time.monotonic()
            return deleted[0]

        return done.addCallback(pruned)

    def wal_bytes(self) -> int:
        try:
            return os.path.getsize(f"{self.path}-wal")
        except OSError:
            return 0

    def checkpoint(self) -> None:
        """A passive checkpoint never waits for readers or the writer."""
        self.reader.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self.last_checkpoint_at = timestamp()
        self.last_checkpoint_monotonic = time.monotonic()

    def storage_health(self, retention_days: float) -> dict[str, Any]:
        """The health ``storage`` block (contract B §4.1)."""
        now = time.monotonic()
        try:
            database_bytes = os.path.getsize(self.path)
            wal_bytes = self.wal_bytes()
            free = self.free_disk_bytes()
            oldest = self.reader.execute("SELECT MIN(created_at) FROM events").fetchone()[0]
        except (OSError, sqlite3.Error):
            return {"status": "degraded", "lastMaintenanceError": "storage health unavailable"}
        horizon = timestamp(time.time_ns() - int((retention_days + 1) * 86400 * 1e9))
        status = "ok"
        if free < CRITICAL_FREE_BYTES:
            status = "critical"
        elif (
            free < WARNING_FREE_BYTES
            or wal_bytes >= WAL_CHECKPOINT_BYTES
            or self.last_maintenance_error
            or (oldest is not None and oldest < horizon)
            or self.writer.state == "failed"
        ):
            status = "warning"
        health: dict[str, Any] = {
            "status": status,
            "databaseBytes": database_bytes,
            "walBytes": wal_bytes,
            "oldestRetainedEventAt": oldest,
            "lastPruneAt": self.last_prune_at,
            "pruneAgeSeconds": _age(self.last_prune_monotonic, now),
            "lastCheckpointAt": self.last_checkpoint_at,
            "checkpointAgeSeconds": _age(self.last_checkpoint_monotonic, now),
            "writerBacklogEvents": self.writer.queued_events,
            "writerBacklogBytes": self.writer.queued_bytes,
            "freeDiskBytes": free,
            "maintenanceBlocked": free < CRITICAL_FREE_BYTES,
        }
        if self.last_maintenance_error:
            health["lastMaintenanceError"] = self.last_maintenance_error
        return health


def _age(then: float | None, now: float) -> int | None:
    return None if then is None else int(now - then)
