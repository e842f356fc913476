"""The ``store`` service: opens the database at start, runs maintenance, flushes at stop."""

from __future__ import annotations

import sqlite3
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from coven.multiservice import ClaimingService
from coven.store.schema import SchemaTooNew
from coven.store.store import CRITICAL_FREE_BYTES, WAL_CHECKPOINT_BYTES, Store

MAINTENANCE_INTERVAL = 60.0


class StoreUnavailable(SystemExit):
    """The store cannot be opened; the daemon must not serve without it."""


class StoreService(ClaimingService):
    """Owns the Store's lifetime; its periodic retention job survives its own failures.

    Opening the database is this service's claim: a store that cannot open stops the daemon
    before its socket is bound, instead of a daemon answering 500s.
    """

    name = "store"
    log = Logger()

    def __init__(self, store: Store, reactor: Any, started_at: str, retention_days: float) -> None:
        self.store = store
        self._reactor = reactor
        self._started_at = started_at
        self._retention_days = retention_days
        self._loop: LoopingCall | None = None

    def claim(self) -> None:
        try:
            recovered = self.store.open(self._started_at)
        except (OSError, sqlite3.Error, SchemaTooNew) as e:
            message = f"coven: cannot open the store {self.store.path}: {e}"
            if getattr(e, "sqlite_errorname", None) in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
                message += (f"; it is damaged: move {self.store.path} and its -wal and -shm files aside to start"
                            " with an empty store (sqlite3's .recover may save what it holds)")
            raise StoreUnavailable(message) from e
        self.log.info(
            "store opened at {path}: {orphaned} running sessions marked orphaned, {failed} stale created marked failed",
            path=str(self.store.path),
            **recovered,
        )

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.maintain)
        self._loop.clock = self._reactor
        self._loop.start(MAINTENANCE_INTERVAL, now=False)

    def stopService(self) -> Deferred:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return self.store.close()

    def maintain(self) -> Deferred:
        """One retention pass; every failure is logged and remembered, never raised."""
        store = self.store
        try:
            if store.free_disk_bytes() < CRITICAL_FREE_BYTES:
                self.log.warn("retention skipped: free disk below {limit} bytes", limit=CRITICAL_FREE_BYTES)
                return succeed(None)
            if store.wal_bytes() >= WAL_CHECKPOINT_BYTES:
                store.checkpoint()
            done = store.prune(self._retention_days)
        except Exception:
            self.log.failure("maintenance pass failed")
            store.last_maintenance_error = "maintenance pass failed"
            return succeed(None)

        def pruned(deleted: int) -> None:
            store.last_maintenance_error = None
            if deleted:
                self.log.info("retention deleted {deleted} events older than {days} days", deleted=deleted,
                              days=self._retention_days)

        def failed(failure: Any) -> None:
            self.log.failure("maintenance pass failed", failure)
            store.last_maintenance_error = "maintenance pass failed"

        return done.addCallbacks(pruned, failed)
