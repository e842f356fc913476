"""COVEN_HOME: a private directory, one daemon at a time, and the files that announce it."""

from __future__ import annotations

import fcntl
import os
import socket
import stat
from pathlib import Path

from coven.config import Config
from coven.multiservice import ClaimingService

HEALTH_PROBE_TIMEOUT = 2.0


class HomeRefused(SystemExit):
    """Startup cannot go on; the message is what the person reads."""


def ensure_private_home(home: Path) -> None:
    """Create the home, refuse a symlink or another user's directory, force mode 0700."""
    if home.is_symlink():
        raise HomeRefused(f"coven: refusing COVEN_HOME {home}: it is a symlink")
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = home.stat()
    except OSError as e:
        raise HomeRefused(f"coven: cannot create COVEN_HOME {home}: {e.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise HomeRefused(f"coven: refusing COVEN_HOME {home}: not a directory")
    if info.st_uid != os.getuid():
        raise HomeRefused(f"coven: refusing COVEN_HOME {home}: owned by uid {info.st_uid}, not {os.getuid()}")
    os.chmod(home, 0o700)


def acquire_lock(path: Path) -> int:
    """Hold an exclusive lock for the process lifetime; a second daemon is refused."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise HomeRefused(
            f"coven: another Coven daemon is already serving this home ({path.parent}); stop it first"
        ) from None
    return fd


def clear_stale_socket(path: Path) -> None:
    """Remove a socket a crashed daemon left; refuse anything that is not a dead socket of ours."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise HomeRefused(f"coven: refusing socket path {path}: it is a symlink")
    if not stat.S_ISSOCK(info.st_mode):
        raise HomeRefused(f"coven: refusing socket path {path}: a non-socket file is in the way")
    if info.st_uid != os.getuid():
        raise HomeRefused(f"coven: refusing socket path {path}: owned by uid {info.st_uid}")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(HEALTH_PROBE_TIMEOUT)
    try:
        probe.connect(str(path))
        probe.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: coven\r\nConnection: close\r\n\r\n")
        answered = probe.recv(12).startswith(b"HTTP/1.1 200")
    except OSError:
        answered = False
    finally:
        probe.close()
    if answered:
        raise HomeRefused(f"coven: a healthy Coven daemon is already serving {path}")
    path.unlink()


class HomeService(ClaimingService):
    """Claims the home before anything else starts and lets go of it last."""

    name = "home"

    def __init__(self, config: Config) -> None:
        self._config = config
        self._lock_fd: int | None = None

    def claim(self) -> None:
        ensure_private_home(self._config.home)
        self._lock_fd = acquire_lock(self._config.lock_file)
        clear_stale_socket(self._config.socket)

    def stopService(self) -> None:
        super().stopService()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
