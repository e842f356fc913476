"""The supervisor: every live session, launched, followed, typed into and killed here."""

from __future__ import annotations

import time
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger

from coven.wire import SessionRecord


class Supervisor:
    """Registry of sessions this daemon holds in memory."""

    log = Logger()

    def __init__(self, reactor: Any, config: Any, store: Any) -> None:
        self._reactor = reactor
        self._config = config
        self._store = store
        self._sessions: dict[str, Any] = {}
        self.paused_sessions = 0
        self._paused_ms = 0.0

    def get(self, session_id: str) -> Any:
        return self._sessions.get(session_id)

    def records(self) -> list[SessionRecord]:
        return [session.record for session in self._sessions.values()]

    def paused_ms(self) -> int:
        return int(self._paused_ms)


class SupervisorService(Service):
    name = "sessions"

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
