"""The one thread that writes to SQLite, and the bounded queue that feeds it.

The reactor only enqueues; the thread commits whatever has queued up in one transaction and
reports back with ``callFromThread``. Queue depth is counted in bytes on the reactor side,
and crossing the high-water mark tells listeners to stop producing (contract A2: lossless
backpressure instead of dropping output). A commit that fails for a reason that can pass (a
full disk, an I/O error, a lock) is retried with backoff and never dropped, so a full disk
turns into paused sessions and a ``failed`` health state, and the writer heals itself when
space returns. A write that can never succeed (a constraint violation, a bug in an op) is
isolated and refused alone, so it cannot wedge every write queued behind it.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

Op = Callable[[sqlite3.Connection], Any]

HIGH_WATER = 8 * 1024 * 1024
LOW_WATER = 2 * 1024 * 1024
ITEM_OVERHEAD = 512
MAX_BATCH = 512
MAX_BACKOFF = 1.0

_STOP = object()
# SQLite result codes (and their extended forms) that describe the moment, not the write.
TRANSIENT = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_NOMEM",
             "SQLITE_READONLY", "SQLITE_PROTOCOL")


def transient(error: BaseException) -> bool:
    return isinstance(error, sqlite3.Error) and getattr(error, "sqlite_errorname", "").startswith(TRANSIENT)


class _Item:
    __slots__ = ("op", "cost", "events", "done")

    def __init__(self, op: Op, cost: int, events: int, done: Deferred | None) -> None:
        self.op = op
        self.cost = cost
        self.events = events
        self.done = done


class Writer:
    """Serialises every write; ``pressured`` flips at the water marks."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        connect: Callable[[], sqlite3.Connection],
        high_water: int = HIGH_WATER,
        low_water: int = LOW_WATER,
    ) -> None:
        self._reactor = reactor
        self._connect = connect
        self.high_water = high_water
        self.low_water = low_water
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._stopped = False
        self._stop_waiters: list[Deferred] = []
        self.pressure_listeners: list[Callable[[bool], None]] = []
        self.pressured = False
        self.state = "healthy"
        self.last_error: str | None = None
        self.queued_events = 0
        self.queued_bytes = 0
        self.transactions = 0
        self.committed_events = 0
        self.connection_opens = 0

    # reactor side

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="coven-writer", daemon=True)
        self._thread.start()

    def submit(self, op: Op, cost: int = 0, events: int = 0, wait: bool = False) -> Deferred | None:
        """Queue ``op``; with ``wait``, return a Deferred that fires once it is committed."""
        done = Deferred() if wait else None
        cost += ITEM_OVERHEAD
        self.queued_bytes += cost
        self.queued_events += events
        self._queue.put(_Item(op, cost, events, done))
        if not self.pressured and self.queued_bytes >= self.high_water:
            self._set_pressure(True)
        return done

    def flushed(self) -> Deferred:
        """A Deferred that fires when everything queued so far is committed."""
        done = self.submit(lambda conn: None, wait=True)
        assert done is not None
        return done

    def stop(self) -> Deferred:
        """Commit what is queued, then close the connection and end the thread.

        Every caller gets its own Deferred, so one caller's callbacks never hold up another's.
        """
        waiter: Deferred = Deferred()
        if self._stopped:
            waiter.callback(None)
            return waiter
        self._stop_waiters.append(waiter)
        if self._thread is None:
            self._finished()
        elif not self._stopping.is_set():
            self._stopping.set()
            self._queue.put(_STOP)
        return waiter

    def _set_pressure(self, on: bool) -> None:
        self.pressured = on
        self.log.info(
            "event writer {what}: {queuedBytes} bytes queued",
            what="pressured, pausing producers" if on else "drained, resuming producers",
            queuedBytes=self.queued_bytes,
        )
        for listener in list(self.pressure_listeners):
            try:
                listener(on)
            except Exception:  # a listener's bug must not cost the acks that follow
                self.log.failure("pressure listener failed")

    def _committed(self, items: list[_Item]) -> None:
        self.transactions += 1
        if self.state == "failed":
            self.log.info("event writer recovered after: {error}", error=self.last_error)
            self.state = "healthy"
        self.committed_events += sum(item.events for item in items)
        self._release(items)
        for item in items:  # last, so whoever an ack wakes sees the writer's state settled
            if item.done is not None:
                item.done.callback(None)

    def _failed(self, error: str) -> None:
        if self.state != "failed":
            self.log.error("event writer commit failed, retrying: {error}", error=error)
        self.state = "failed"
        self.last_error = error

    def _abandoned(self, items: list[_Item], error: str) -> None:
        self.log.error("event writer gave up on {count} writes at shutdown: {error}", count=len(items), error=error)
        self._release(items)
        for item in items:
            if item.done is not None:
                item.done.errback(sqlite3.OperationalError(error))

    def _refused(self, item: _Item, failure: Failure) -> None:
        self.log.failure("event writer refused a write that can never commit", failure)
        self._release([item])
        if item.done is not None:
            item.done.errback(failure)

    def _release(self, items: list[_Item]) -> None:
        """Take finished writes off the queue's count; below the low-water mark producers resume."""
        for item in items:
            self.queued_bytes -= item.cost
            self.queued_events -= item.events
        if self.pressured and self.queued_bytes <= self.low_water:
            self._set_pressure(False)

    def _finished(self) -> None:
        self._stopped = True
        waiters, self._stop_waiters = self._stop_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    # writer thread

    def _run(self) -> None:
        conn = self._connect()
        self._reactor.callFromThread(self._count_open)
        try:
            stop = False
            while not stop:
                items: list[_Item] = []
                item = self._queue.get()
                while True:
                    if item is _STOP:
                        stop = True
                        break
                    items.append(item)
                    if len(items) >= MAX_BATCH:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                if items:
                    self._commit(conn, items)
        finally:
            conn.close()
            self._reactor.callFromThread(self._finished)

    def _count_open(self) -> None:
        self.connection_opens += 1

    def _commit(self, conn: sqlite3.Connection, items: list[_Item]) -> None:
        backoff = 0.02
        tries_after_stop = 0
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                for item in items:
                    item.op(conn)
                conn.execute("COMMIT")
            except Exception as e:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if not transient(e):
                    if len(items) == 1:
                        self._reactor.callFromThread(self._refused, items[0], Failure())
                        return
                    for item in items:  # in order, so only the broken write is lost
                        self._commit(conn, [item])
                    return
                error = f"{type(e).__name__}: {e}"
                self._reactor.callFromThread(self._failed, error)
                if self._stopping.is_set():
                    tries_after_stop += 1
                    if tries_after_stop >= 3:
                        self._reactor.callFromThread(self._abandoned, items, error)
                        return
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            self._reactor.callFromThread(self._committed, items)
            return
