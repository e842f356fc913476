"""A real ``twistd coven`` in a subprocess, for tests that need the whole daemon (signals, env).

Blocking helpers on purpose: these tests drive an outside process, not the test's reactor.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TWISTD = "from twisted.scripts.twistd import run; run()"
# twistd finishes a clean shutdown and then re-raises the signal that asked for it, so a
# SIGTERM stop exits "killed by SIGTERM" (systemd counts that as a clean stop).
STOPPED_BY_SIGTERM = -signal.SIGTERM


def health(socket_path: Path, timeout: float = 2.0) -> bytes | None:
    """The raw health response, or None when nothing answers."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(socket_path))
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: coven\r\nConnection: close\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        sock.close()


class Daemon:
    """One daemon process on a home; ``stop()`` sends SIGTERM and waits for the exit."""

    def __init__(self, home: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.socket = home / "coven.sock"
        self.log_path = home.parent / f"{home.name}.log"
        environ = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "COVEN_HOME")}
        environ["PYTHONPATH"] = str(REPO)
        environ.update(env or {})
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-c", TWISTD, "--nodaemon", "--pidfile=", "coven", "--home", str(home), *args],
            cwd=REPO,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_healthy(self, timeout: float = 20.0) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited with {self.process.returncode}:\n{self.log()}")
            answer = health(self.socket) if self.socket.exists() else None
            if answer and answer.startswith(b"HTTP/1.1 200"):
                return answer
            time.sleep(0.05)
        raise AssertionError(f"daemon not healthy after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode
