"""The API's listening socket as a service whose failure to bind is fatal at start.

Listening directly (not through strports) keeps Twisted's TLS support, and the OpenSSL it
loads, out of a daemon that never speaks TLS: about 13 MiB of resident memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed

from coven.multiservice import ClaimingService

# A deep backlog queues a burst of clients instead of refusing non-blocking connects.
BACKLOG = 1024


class UnixListenService(ClaimingService):
    """Binds a private (0600) Unix socket; a failed bind is raised and stops the start."""

    name = "api"

    def __init__(self, reactor: Any, path: Path, factory: Any) -> None:
        self._reactor = reactor
        self._path = path
        self._factory = factory
        self.port: Any = None

    def claim(self) -> None:
        self.port = self._reactor.listenUNIX(str(self._path), self._factory, backlog=BACKLOG, mode=0o600, wantPID=False)

    def stopService(self) -> Deferred:
        super().stopService()
        port, self.port = self.port, None
        return succeed(None) if port is None else maybeDeferred(port.stopListening)
