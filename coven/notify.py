"""sd_notify(3) without libsystemd: one datagram to ``$NOTIFY_SOCKET`` per state change.

systemd (``Type=notify``) hands the daemon a datagram socket address in ``NOTIFY_SOCKET``: a
path, or an abstract name written with a leading ``@``. Messages are newline-separated
``KEY=VALUE`` lines (``READY=1``, ``STOPPING=1``, ``STATUS=…``). Without the variable every
call is a no-op, so the daemon behaves the same outside systemd.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

from twisted.logger import Logger


def notify_address(environ: Mapping[str, str]) -> str | None:
    """The socket address to connect to, or None when there is nothing to tell."""
    raw = environ.get("NOTIFY_SOCKET", "")
    if raw.startswith("@"):
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    return None  # unset, empty, or a transport we do not speak (vsock:)


class Notifier:
    """Sends state to the service manager; never raises, logs a failed send once."""

    log = Logger()

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._address = notify_address(environ)
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, **fields: object) -> bool:
        """Send ``KEY=value`` lines (keyword names are the keys); True if a datagram went out."""
        if self._address is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self._address)
                sock.sendall(message)
        except OSError as error:
            if not self._failed:
                self._failed = True
                self.log.warn("sd_notify failed: {error}", error=str(error))
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY=1, STATUS=status)

    def status(self, status: str) -> bool:
        return self.send(STATUS=status)

    def stopping(self, status: str, extend_seconds: float | None = None) -> bool:
        """``STOPPING=1``; ``extend_seconds`` asks for at least that long before a stop timeout."""
        if extend_seconds is None:
            return self.send(STOPPING=1, STATUS=status)
        return self.send(STOPPING=1, STATUS=status, EXTEND_TIMEOUT_USEC=int(extend_seconds * 1_000_000))
