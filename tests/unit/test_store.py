"""The durable store: migrations, recovery, the writer thread, retention and storage health.

The writer is a real thread on the real reactor; tests hold it inside a ``Gate`` op when they
need the queue to build up, and learn what happened through Deferreds, never by sleeping.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from coven.store import schema
from coven.store import store as store_module
from coven.store.service import MAINTENANCE_INTERVAL, StoreService, StoreUnavailable
from coven.store.store import MiB, Store, decode_cursor, encode_cursor
from coven.store.writer import ITEM_OVERHEAD, MAX_BATCH, Writer
from coven.wire import EventRecord, SessionRecord, timestamp
from tests.conftest import within

DAY_NS = 86400 * 1_000_000_000


def session(id_: str, status: str = "running", created_ns: int | None = None, **fields: Any) -> SessionRecord:
    stamp = timestamp(created_ns)
    return SessionRecord(id=id_, project_root="/p", harness="sh", title=id_, status=status,
                         created_at=stamp, updated_at=stamp, **fields)


def event(session_id: str, seq: int, age_days: float = 0.0) -> EventRecord:
    created = timestamp(time.time_ns() - int(age_days * DAY_NS))
    return EventRecord(seq, str(uuid.uuid4()), session_id, "output", f'{{"data":"line {seq}"}}', created)


def rows(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


class Gate:
    """An op that holds the writer thread until released, and says when it got there."""

    def __init__(self) -> None:
        self.entered: Deferred = Deferred()
        self._release = threading.Event()

    def __call__(self, conn: sqlite3.Connection) -> None:
        if not self.entered.called:
            reactor.callFromThread(lambda: self.entered.called or self.entered.callback(None))
        self._release.wait(30)

    def release(self) -> None:
        self._release.set()


class Gates:
    """Makes gates and opens them all, so a failing test cannot leave the writer stuck."""

    def __init__(self) -> None:
        self._made: list[Gate] = []

    def __call__(self) -> Gate:
        self._made.append(Gate())
        return self._made[-1]

    def release_all(self) -> None:
        for gate in self._made:
            gate.release()


@pytest.fixture
def gates() -> Any:
    made = Gates()
    yield made
    made.release_all()


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "coven.sqlite3"
    conn = schema.connect(path)
    schema.migrate(conn)
    conn.close()
    return path


@pytest_twisted.async_yield_fixture
async def small_writer(database: Path, gates: Any) -> Any:
    """A writer with water marks a few items apart."""
    writer = Writer(reactor, lambda: schema.connect(database), high_water=8 * ITEM_OVERHEAD,
                    low_water=2 * ITEM_OVERHEAD)
    writer.start()
    yield writer
    gates.release_all()
    await within(writer.stop())


# schema and opening


@pytest_twisted.ensureDeferred
async def test_open_applies_and_records_migrations(tmp_path: Path) -> None:
    path = tmp_path / "coven.sqlite3"
    store = Store(reactor, path)
    store.open(timestamp())
    await within(store.close())
    recorded = rows(path, "SELECT version, applied_at FROM schema_migrations")
    assert [version for version, _ in recorded] == [version for version, _ in schema.MIGRATIONS]
    assert all(len(applied) == 30 and applied.endswith("Z") for _, applied in recorded)
    assert rows(path, "PRAGMA journal_mode") == [("wal",)]
    tables = {name for (name,) in rows(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"sessions", "events", "store_meta", "schema_migrations"} <= tables
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest_twisted.ensureDeferred
async def test_reopening_keeps_rows_and_applies_nothing_new(store: Store, config: Any) -> None:
    store.insert_session(session("kept", status="completed"))
    store.append_events([event("kept", 1), event("kept", 2)])
    await within(store.close())
    reopened = Store(reactor, config.database)
    reopened.open(timestamp())
    try:
        assert reopened.get_session("kept").last_seq == 2
        assert [e.seq for e in reopened.read_events("kept", 0, None)] == [1, 2]
        conn = schema.connect(config.database)
        assert schema.migrate(conn) == []
        conn.close()
    finally:
        await within(reopened.close())


def test_a_store_from_a_newer_daemon_is_refused(database: Path) -> None:
    conn = sqlite3.connect(database)
    conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (schema.LATEST + 1, timestamp()))
    conn.commit()
    conn.close()
    service = StoreService(Store(reactor, database), reactor, timestamp(), 30)
    with pytest.raises(StoreUnavailable, match="cannot open the store .* is newer than this daemon"):
        service.privilegedStartService()


def test_a_store_that_cannot_open_stops_startup(tmp_path: Path) -> None:
    path = tmp_path / "coven.sqlite3"
    path.mkdir()
    service = StoreService(Store(reactor, path), reactor, timestamp(), 30)
    with pytest.raises(StoreUnavailable, match=f"coven: cannot open the store {path}"):
        service.privilegedStartService()


def test_a_damaged_store_stops_startup_and_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "coven.sqlite3"
    path.write_bytes(b"this is not a database, it only has the name of one" * 100)
    service = StoreService(Store(reactor, path), reactor, timestamp(), 30)
    with pytest.raises(StoreUnavailable) as refused:
        service.privilegedStartService()
    message = str(refused.value)
    assert message.startswith(f"coven: cannot open the store {path}: file is not a database")
    assert f"move {path} and its -wal and -shm files aside" in message
    assert path.read_bytes().startswith(b"this is not a database")  # left as it was


@pytest_twisted.ensureDeferred
async def test_recovery_marks_rows_an_earlier_daemon_left(store: Store, config: Any) -> None:
    old = time.time_ns() - 700 * 1_000_000_000
    store.insert_session(session("was-running", pid=4242))
    store.insert_session(session("external-running", external=True))
    store.insert_session(session("idle", status="idle", conversation_id="c"))
    store.insert_session(session("stale-created", status="created", created_ns=old))
    store.insert_session(session("fresh-created", status="created"))
    store.insert_session(session("done", status="completed", exit_code=0))
    await within(store.close())

    started = timestamp()
    reopened = Store(reactor, config.database)
    assert reopened.open(started) == {"orphaned": 1, "failed": 1}
    try:
        status = {id_: reopened.get_session(id_) for id_ in
                  ["was-running", "external-running", "idle", "stale-created", "fresh-created", "done"]}
        assert {id_: r.status for id_, r in status.items()} == {
            "was-running": "orphaned", "external-running": "running", "idle": "idle",
            "stale-created": "failed", "fresh-created": "created", "done": "completed",
        }
        assert status["was-running"].updated_at == started
        assert rows(config.database, "SELECT pid FROM sessions WHERE id = 'was-running'") == [(None,)]
        assert status["done"].updated_at != started
    finally:
        await within(reopened.close())


# the writer


@pytest_twisted.ensureDeferred
async def test_writes_queued_while_busy_commit_in_one_transaction(store: Store, gates: Any) -> None:
    writer, gate = store.writer, gates()
    writer.submit(gate)
    await within(gate.entered)
    before = writer.transactions
    acks = [writer.submit(lambda conn, n=n: conn.execute("INSERT INTO store_meta VALUES (?, ?)", (f"k{n}", "v")),
                          wait=True) for n in range(10)]
    store.insert_session(session("s"))
    store.append_events([event("s", 1), event("s", 2)])
    assert writer.queued_events == 2 and writer.queued_bytes > 0
    assert not any(ack.called for ack in acks)
    gate.release()
    await within(acks[-1])
    await within(writer.flushed())
    assert all(ack.called for ack in acks)
    assert writer.transactions - before == 3  # the gate, the batch of twelve, the flush marker
    assert (writer.queued_events, writer.queued_bytes) == (0, 0)
    assert writer.committed_events == 2 and writer.connection_opens == 1
    assert len(rows(store.path, "SELECT * FROM store_meta")) == 10


@pytest_twisted.ensureDeferred
async def test_a_batch_holds_at_most_max_batch_items(store: Store, gates: Any) -> None:
    writer, gate = store.writer, gates()
    writer.submit(gate)
    await within(gate.entered)
    before = writer.transactions
    for _ in range(MAX_BATCH + 10):
        writer.submit(lambda conn: None)
    gate.release()
    await within(writer.flushed())
    assert writer.transactions - before == 3


@pytest_twisted.ensureDeferred
async def test_backpressure_turns_on_at_high_water_and_off_at_low_water(small_writer: Writer, gates: Any) -> None:
    calls: list[tuple[bool, int]] = []
    small_writer.pressure_listeners.append(lambda on: calls.append((on, small_writer.queued_bytes)))
    gate = gates()
    small_writer.submit(gate)
    await within(gate.entered)
    for _ in range(6):
        small_writer.submit(lambda conn: None)
    assert calls == [] and not small_writer.pressured
    small_writer.submit(lambda conn: None, cost=ITEM_OVERHEAD)
    assert calls == [(True, 9 * ITEM_OVERHEAD)] and small_writer.pressured
    small_writer.submit(lambda conn: None)
    assert len(calls) == 1  # once per crossing
    gate.release()
    await within(small_writer.flushed())
    assert len(calls) == 2 and not small_writer.pressured
    assert calls[1][0] is False and calls[1][1] <= small_writer.low_water


@pytest_twisted.ensureDeferred
async def test_a_failing_pressure_listener_costs_no_acks(small_writer: Writer, gates: Any) -> None:
    """A listener that raises (as pausing an ended session once did) must not wedge the writer."""
    def broken(on: bool) -> None:
        raise AttributeError("listener bug")

    small_writer.pressure_listeners.append(broken)
    gate = gates()
    small_writer.submit(gate)
    await within(gate.entered)
    acks = [small_writer.submit(lambda conn: None, cost=ITEM_OVERHEAD, wait=True) for _ in range(8)]
    assert small_writer.pressured
    gate.release()
    await within(small_writer.flushed())
    assert all(ack.called for ack in acks) and not small_writer.pressured


@pytest_twisted.ensureDeferred
async def test_a_failing_commit_is_retried_failed_then_healthy(store: Store) -> None:
    writer = store.writer
    attempts: list[int] = []
    seen: list[tuple[str, str | None]] = []

    def fill(conn: sqlite3.Connection) -> None:
        """A genuinely full database on the first try; room again on the retry."""
        attempts.append(1)
        conn.execute(f"PRAGMA max_page_count = {1 if len(attempts) == 1 else 1_073_741_823}")
        if len(attempts) > 1:
            reactor.callFromThread(lambda: seen.append((writer.state, writer.last_error)))
        conn.execute("INSERT INTO store_meta VALUES ('big', ?)", ("x" * 200_000,))

    store.insert_session(session("before"))
    done = writer.submit(fill, wait=True)
    store.insert_session(session("after"))
    await within(done)
    await within(writer.flushed())
    assert len(attempts) == 2
    assert seen == [("failed", "OperationalError: database or disk is full")]
    assert writer.state == "healthy"
    assert store.get_session("before") is not None and store.get_session("after") is not None


@pytest_twisted.ensureDeferred
async def test_a_write_that_can_never_commit_is_refused_alone(store: Store, gates: Any) -> None:
    writer, gate = store.writer, gates()
    store.insert_session(session("dup"))
    writer.submit(gate)
    await within(gate.entered)
    first = store.insert_session(session("first"), wait=True)
    broken = store.insert_session(session("dup"), wait=True)  # primary key taken
    last = store.insert_session(session("last"), wait=True)
    gate.release()
    await within(last)
    assert first.called
    with pytest.raises(sqlite3.IntegrityError):
        await within(broken)
    assert writer.state == "healthy" and writer.queued_bytes == 0
    assert [r.id for r in store.list_sessions(None, None, False)] == ["last", "first", "dup"]


@pytest_twisted.ensureDeferred
async def test_close_commits_everything_queued(store: Store, gates: Any) -> None:
    gate = gates()
    store.writer.submit(gate)
    await within(gate.entered)
    store.insert_session(session("s"))
    for seq in range(1, 201):
        store.append_events([event("s", seq)])
    closing = store.close()
    gate.release()
    await within(closing)
    assert rows(store.path, "SELECT COUNT(*), MAX(seq) FROM events") == [(200, 200)]
    assert rows(store.path, "SELECT last_seq FROM sessions") == [(200,)]


@pytest_twisted.ensureDeferred
async def test_every_caller_of_close_gets_its_own_deferred(store: Store) -> None:
    first, second = store.close(), store.close()
    assert first is not second
    await within(first)
    await within(second)
    assert store.close().called


# reads


@pytest_twisted.ensureDeferred
async def test_event_reads_and_cursor_round_trip(store: Store) -> None:
    store.insert_session(session("s"))
    store.append_events([event("s", n) for n in range(1, 6)])
    await within(store.writer.flushed())
    assert [e.seq for e in store.read_events("s", 2, 2)] == [3, 4]
    third = store.read_events("s", 2, 1)[0]
    assert store.event_seq("s", third.id) == 3 and store.event_seq("other", third.id) is None
    record = store.get_session("s")
    cursor = decode_cursor(encode_cursor(record))
    assert (cursor.created_at, cursor.id) == (record.created_at, "s")


# retention


@pytest_twisted.ensureDeferred
async def test_retention_deletes_old_events_without_renumbering(store: Store) -> None:
    store.insert_session(session("s"))
    store.append_events([event("s", 1, 45), event("s", 2, 31), event("s", 3, 29), event("s", 4, 1)])
    await within(store.writer.flushed())
    assert await within(store.prune(30)) == 2
    assert [e.seq for e in store.read_events("s", 0, None)] == [3, 4]
    store.append_events([event("s", 5)])
    await within(store.writer.flushed())
    assert [e.seq for e in store.read_events("s", 0, None)] == [3, 4, 5]
    assert store.last_prune_at is not None
    assert store.storage_health(30)["pruneAgeSeconds"] == 0


@pytest_twisted.ensureDeferred
async def test_retention_deletes_oldest_first_in_bounded_batches(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "PRUNE_BATCH", 2)
    monkeypatch.setattr(store_module, "PRUNE_BATCHES", 2)
    store.insert_session(session("s"))
    store.append_events([event("s", seq, age) for seq, age in [(1, 50), (2, 45), (3, 40), (4, 35), (5, 31), (6, 1)]])
    await within(store.writer.flushed())
    assert await within(store.prune(30)) == 4
    assert [e.seq for e in store.read_events("s", 0, None)] == [5, 6]
    assert await within(store.prune(30)) == 1


@pytest_twisted.async_yield_fixture
async def maintained(config: Any) -> Any:
    """A started StoreService whose retention loop runs on a Clock."""
    clock = Clock()
    service = StoreService(Store(reactor, config.database), clock, timestamp(), 30)
    service.privilegedStartService()
    service.startService()
    yield service, clock
    await within(service.stopService())


@pytest_twisted.ensureDeferred
async def test_the_retention_job_survives_its_own_failures(
    maintained: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, clock = maintained
    store = service.store
    outcomes = [RuntimeError("sync boom"), "async", None]
    real_prune = store.prune

    def prune(days: float) -> Deferred:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        if outcome == "async":
            return fail(RuntimeError("async boom"))
        return real_prune(days)

    monkeypatch.setattr(store, "prune", prune)
    clock.advance(MAINTENANCE_INTERVAL)
    assert store.last_maintenance_error == "maintenance pass failed"
    assert store.storage_health(30)["lastMaintenanceError"] == "maintenance pass failed"
    clock.advance(MAINTENANCE_INTERVAL)
    assert store.last_maintenance_error == "maintenance pass failed" and outcomes == [None]
    assert service._loop is not None and service._loop.running
    await within(service.maintain())
    assert store.last_maintenance_error is None and store.last_prune_at is not None


@pytest_twisted.ensureDeferred
async def test_maintenance_skips_pruning_on_a_nearly_full_disk_and_checkpoints_a_big_wal(
    maintained: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, clock = maintained
    store = service.store
    pruned: list[float] = []
    monkeypatch.setattr(store, "prune", lambda days: pruned.append(days) or fail(AssertionError("pruned")))
    monkeypatch.setattr(store, "free_disk_bytes", lambda: 100 * MiB)
    clock.advance(MAINTENANCE_INTERVAL)
    assert pruned == [] and store.last_maintenance_error is None
    monkeypatch.setattr(store, "free_disk_bytes", lambda: 10_000 * MiB)
    monkeypatch.setattr(store, "wal_bytes", lambda: 16 * MiB)
    monkeypatch.setattr(store, "prune", lambda days: pruned.append(days) or succeed(0))
    clock.advance(MAINTENANCE_INTERVAL)
    assert pruned == [30] and store.last_checkpoint_at is not None


# storage health (B §4.1)


@pytest.mark.parametrize(
    ("free", "wal", "maintenance_error", "writer_state", "status"),
    [
        (10_000 * MiB, 0, None, "healthy", "ok"),
        (255 * MiB, 0, None, "healthy", "critical"),
        (1000 * MiB, 0, None, "healthy", "warning"),
        (10_000 * MiB, 16 * MiB, None, "healthy", "warning"),
        (10_000 * MiB, 16 * MiB - 1, None, "healthy", "ok"),
        (10_000 * MiB, 0, "maintenance pass failed", "healthy", "warning"),
        (10_000 * MiB, 0, None, "failed", "warning"),
    ],
)
def test_storage_status_thresholds(
    store: Store, monkeypatch: pytest.MonkeyPatch, free: int, wal: int, maintenance_error: str | None,
    writer_state: str, status: str,
) -> None:
    monkeypatch.setattr(store, "free_disk_bytes", lambda: free)
    monkeypatch.setattr(store, "wal_bytes", lambda: wal)
    monkeypatch.setattr(store, "last_maintenance_error", maintenance_error)
    monkeypatch.setattr(store.writer, "state", writer_state)
    health = store.storage_health(30)
    assert health["status"] == status
    assert (health["freeDiskBytes"], health["walBytes"]) == (free, wal)
    assert health["maintenanceBlocked"] is (status == "critical")
    assert health.get("lastMaintenanceError") == maintenance_error


@pytest_twisted.ensureDeferred
async def test_storage_warns_when_retention_lags(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "free_disk_bytes", lambda: 10_000 * MiB)
    store.insert_session(session("s"))
    store.append_events([event("s", 1, 30.5)])
    await within(store.writer.flushed())
    health = store.storage_health(30)
    assert health["status"] == "ok" and health["oldestRetainedEventAt"].endswith("Z")
    store.append_events([event("s", 2, 0), event("s", 3, 31.5)])
    await within(store.writer.flushed())
    assert store.storage_health(30)["status"] == "warning"


def test_storage_degraded_when_it_cannot_measure(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(path: Any) -> int:
        raise OSError("gone")

    monkeypatch.setattr(os.path, "getsize", unavailable)
    assert store.storage_health(30) == {"status": "degraded", "lastMaintenanceError": "storage health unavailable"}


def test_timestamps_are_fixed_width_with_nine_fractional_digits() -> None:
    """Cursors and retention compare them as strings (contract B §5.3)."""
    assert timestamp(5) == "1970-01-01T00:00:00.000000005Z"
    assert timestamp(1_778_309_000_123_456_789) == "2026-05-09T06:43:20.123456789Z"
    assert len(timestamp()) == 30
