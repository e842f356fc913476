"""Fakes for unit tests that drive sessions on a fake clock."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed


class FakeWriter:
    def __init__(self) -> None:
        self.pressure_listeners: list[Any] = []
        self.pressured = False
        self.state = "healthy"
        self.last_error = None
        self.pending: list[Deferred] = []
        self.refuse: Exception | None = None  # how every write fails, when the test says they do

    def flushed(self) -> Deferred:
        return succeed(None) if self.refuse is None else fail(self.refuse)


class FakeStore:
    """Records what would be written; commits happen when the test says so."""

    def __init__(self) -> None:
        self.writer = FakeWriter()
        self.events: list[Any] = []
        self.updates: list[tuple[str, dict[str, Any]]] = []
        self.inserted: list[Any] = []
        self.uncommitted: list[Deferred] = []
        self.autocommit = True

    def insert_session(self, record: Any, wait: bool = False) -> Any:
        self.inserted.append(record)
        return succeed(None) if wait else None

    def update_session(self, session_id: str, wait: bool = False, **fields: Any) -> Any:
        self.updates.append((session_id, fields))
        return succeed(None) if wait else None

    def append_events(self, events: list[Any], wait: bool = False) -> Any:
        if self.writer.refuse is not None:
            return fail(self.writer.refuse)
        self.events.extend(events)
        d: Deferred = Deferred()
        if self.autocommit:
            d.callback(None)
        else:
            self.uncommitted.append(d)
        return d

    def commit(self) -> None:
        pending, self.uncommitted = self.uncommitted, []
        for d in pending:
            d.callback(None)


class FakeHandle:
    """A process group that signals can empty, as the test decides."""

    def __init__(self, pid: int = 4242, dies_on: frozenset[int] = frozenset()) -> None:
        self.pid = pid
        self.signals: list[tuple[float, int]] = []
        self.alive = True
        self.dies_on = dies_on
        self.clock: Any = None
        self.written: list[bytes] = []
        self.sizes: list[tuple[int, int]] = []
        self.paused = False

    def signal_group(self, signum: int) -> bool:
        if not self.alive:
            return False
        if signum:
            self.signals.append((self.clock.seconds() if self.clock else 0.0, signum))
            if signum in self.dies_on:
                self.alive = False
        return True

    def group_alive(self) -> bool:
        return self.alive

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def resize(self, rows: int, cols: int) -> None:
        self.sizes.append((rows, cols))

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
