"""Kill that really kills: SIGHUP, SIGTERM, SIGKILL to a whole process group (contract A8)."""

from __future__ import annotations

import signal
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from coven.sessions.runtime import PtyHandle, signal_name


class KillLadder:
    """Climbs one rung per grace period while anyone is left in the group.

    The ladder outlives the session's own process: a grandchild that ignored SIGHUP still
    gets SIGTERM and then SIGKILL. ``done`` fires when the group is empty or SIGKILL is sent.
    """

    log = Logger()

    def __init__(self, reactor: Any, handle: PtyHandle, hup_grace: float, term_grace: float, session_id: str) -> None:
        self._reactor = reactor
        self._handle = handle
        self._session_id = session_id
        self._rungs = [(signal.SIGHUP, hup_grace), (signal.SIGTERM, term_grace), (signal.SIGKILL, None)]
        self._call: Any = None
        self.done: Deferred = Deferred()

    def start(self) -> Deferred:
        self._climb()
        return self.done

    def _climb(self) -> None:
        self._call = None
        signum, grace = self._rungs.pop(0)
        if not self._handle.signal_group(signum):
            return self._finish("process group empty")
        self.log.info("session {sessionId}: sent {signal} to process group {pgid}",
                      sessionId=self._session_id, signal=signal_name(signum), pgid=self._handle.pid)
        if grace is None:
            return self._finish("SIGKILL sent")
        self._call = self._reactor.callLater(grace, self._climb)

    def poke(self) -> None:
        """The session's process ended: finish early if it took its whole group with it."""
        if self._call is not None and not self._handle.group_alive():
            self._call.cancel()
            self._call = None
            self._finish("process group empty")

    def _finish(self, why: str) -> None:
        if not self.done.called:
            self.log.debug("session {sessionId}: kill ladder done ({why})", sessionId=self._session_id, why=why)
            self.done.callback(None)
