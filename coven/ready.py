"""The last service to start: tells the world this daemon serves, and takes it back at stop."""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger

from coven.config import Config


class ReadyService(Service):
    """Writes ``daemon.json`` (0600) once everything before it runs; removes it if still ours."""

    name = "ready"
    log = Logger()

    def __init__(self, config: Config, identity: dict[str, Any]) -> None:
        self._config = config
        self._identity = identity

    def startService(self) -> None:
        super().startService()
        path = self._config.daemon_json
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self._identity, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
        self.log.info("daemon started pid={pid} socket={socket}", **self._identity)

    def stopService(self) -> None:
        super().stopService()
        self.log.info("daemon stopping pid={pid}", pid=os.getpid())
        path = self._config.daemon_json
        try:
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
        except (OSError, ValueError):
            pass
