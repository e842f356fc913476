"""A parent service that waits for its children, in order, and never loses their errors.

Stock ``MultiService`` starts children without waiting and drops stop failures; a daemon
whose store must flush after its sessions have exited needs both done properly.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure


class AsyncMultiService(MultiService):
    """Start children in order and stop them in reverse, each after the previous finished.

    A child that fails synchronously raises out of ``startService`` itself, so twistd (which
    ignores the returned Deferred) aborts startup instead of serving half a daemon; a failure
    after an asynchronous start is logged and fails the returned Deferred.
    """

    log = Logger()

    def startService(self) -> Deferred:  # type: ignore[override]
        self.running = 1
        pending = list(self)

        def next_child(_: Any = None) -> Deferred:
            while pending:
                child = pending.pop(0)
                started = child.startService()
                if isinstance(started, Deferred):
                    return started.addCallback(next_child)
            return succeed(None)

        return next_child().addErrback(self._start_failed)

    def _start_failed(self, failure: Failure) -> Failure:
        self.log.failure("starting services failed", failure)
        return failure

    def stopService(self) -> Deferred:  # type: ignore[override]
        self.running = 0
        children = list(self)
        children.reverse()
        errors: list[Failure] = []
        done: Deferred = Deferred()

        def next_child(_: Any = None) -> Any:
            while children:
                child = children.pop(0)
                if not child.running:
                    continue
                d = maybeDeferred(child.stopService)
                d.addErrback(record, child)
                return d.addCallback(next_child)
            if errors:
                return errors[0]
            return None

        def record(failure: Failure, child: Any) -> None:
            self.log.failure("stopping service {name} failed", failure, name=child.name)
            errors.append(failure)

        done.addCallback(next_child)
        done.callback(None)
        return done


class ClaimingService(Service):
    """A service that claims something of the system (a lock, a database, a socket) early.

    twistd calls ``privilegedStartService`` on the whole tree before any ``startService``, so
    claims happen in tree order before anything serves, and a failed claim ends the process;
    ``twist`` calls only ``startService``. The claim runs in whichever comes first, once.
    """

    claimed = False

    def claim(self) -> None:
        raise NotImplementedError

    def _claim_once(self) -> None:
        if not self.claimed:
            self.claim()
            self.claimed = True

    def privilegedStartService(self) -> None:
        self._claim_once()
        super().privilegedStartService()

    def startService(self) -> None:
        self._claim_once()
        super().startService()

    def stopService(self) -> Any:
        self.claimed = False
        return super().stopService()
