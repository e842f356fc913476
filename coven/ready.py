"""The last service to start: tells the world this daemon serves, and takes it back at stop.

"The world" is ``daemon.json`` in the home and, under systemd (``Type=notify``), the service
manager: ``READY=1`` once everything before this service runs (the API socket listens), and
``STOPPING=1`` as soon as the stop begins, with room for the kill ladder.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger

from coven import __version__
from coven.config import Config
from coven.notify import Notifier

STOP_MARGIN = 10.0  # seconds beyond the kill ladder for exits to be stored and the store to flush


class ReadyService(Service):
    """Writes ``daemon.json`` (0600) once everything before it runs; removes it if still ours."""

    name = "ready"
    log = Logger()

    def __init__(self, config: Config, identity: dict[str, Any], notifier: Notifier | None = None) -> None:
        self._config = config
        self._identity = identity
        self._notifier = notifier if notifier is not None else Notifier(config.environ)

    def startService(self) -> None:
        super().startService()
        path = self._config.daemon_json
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self._identity, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
        self.log.info("daemon started version={version} pid={pid} socket={socket} home={home}",
                      version=__version__, pid=self._identity["pid"], socket=self._identity["socket"],
                      home=str(self._config.home))
        self._notifier.ready(f"serving {self._identity['socket']}")

    def stopService(self) -> None:
        super().stopService()
        self.log.info("daemon stopping pid={pid}", pid=os.getpid())
        budget = self._config.hup_grace + self._config.term_grace + STOP_MARGIN
        self._notifier.stopping("stopping: ending live sessions", extend_seconds=budget)
        path = self._config.daemon_json
        try:
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
        except (OSError, ValueError):
            pass
