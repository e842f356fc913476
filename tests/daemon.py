"""Run the Coven daemon as a real process and talk to it over its real socket.

    daemon = Daemon().start()            # a fresh private home under /tmp; waits for health
    response = daemon.request("GET", "/api/v1/health")
    assert response.status == 200 and response.json()["ok"] is True
    assert daemon.stop() == -signal.SIGTERM
    daemon.close()                       # always: kills what is left, removes the home

In tests use the ``daemon`` fixture (a running daemon) or ``make_daemon`` (extra args, extra
environment, several daemons on one home) from ``tests/conftest.py``; both clean up.

The client speaks HTTP/1.1 exactly as the Rust Coven client does: ``Host: coven``, an explicit
``Content-Length`` (also on GET), then a half-close of its write side, then it reads to EOF.
Every daemon gets a unique ``COVEN_TEST_DAEMON`` token in its environment, which session
children inherit, so ``close()`` finds and kills whatever it left running.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
IO_TIMEOUT = 10.0
POLL_INTERVAL = 0.05
TOKEN_VARIABLE = "COVEN_TEST_DAEMON"


@dataclass
class Response:
    """One parsed HTTP response; ``headers`` keeps every line, so duplicates stay visible.

    ``raw`` is exactly the bytes of this response (a pipelined next one starts after it).
    """

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes = field(repr=False)

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


def parse_response(raw: bytes, head: bool = False) -> Response:
    """Parse one Content-Length-framed response; fail loudly on chunking or a short body.

    ``head``: the answer to a HEAD request, whose Content-Length describes no body.
    """
    top, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep, f"no end of headers in {raw[:200]!r}"
    lines = top.decode("latin-1").split("\r\n")
    version, status, *reason = lines[0].split(" ", 2)
    assert version == "HTTP/1.1", lines[0]
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]
    response = Response(int(status), reason[0] if reason else "", headers, b"", raw)  # type: ignore[arg-type]
    assert not response.header_values("Transfer-Encoding"), "chunked or encoded response"
    lengths = response.header_values("Content-Length")
    assert len(lengths) == 1, f"Content-Length headers: {lengths}"
    length = 0 if head else int(lengths[0])
    assert len(rest) >= length, f"body shorter than Content-Length {length}: {rest!r}"
    response.body = rest[:length]
    response.raw = raw[: len(top) + len(sep) + length]
    return response


def exchange(path: str | Path, data: bytes, half_close: bool = True, timeout: float = IO_TIMEOUT) -> bytes:
    """Send ``data`` on a new connection and read until the daemon closes it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def read_response(sock: socket.socket) -> Response:
    """Read exactly one response from a connection that stays open (keep-alive)."""
    data = b""
    while True:
        top, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            lines = top.decode("latin-1").split("\r\n")[1:]
            lengths = [v for k, _, v in (line.partition(":") for line in lines) if k.lower() == "content-length"]
            if lengths and len(rest) >= int(lengths[0]):
                return parse_response(data)
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {data!r}"
        data += chunk


def encode_request(
    method: str, target: str, body: bytes | str | dict | list | None = None, headers: dict[str, str] | None = None
) -> bytes:
    """The Rust client's request bytes; a dict or list body is sent as JSON."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    body = body or b""
    fields = {"Host": "coven", "Content-Type": "application/json", "Content-Length": str(len(body))}
    fields.update(headers or {})
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
    return head.encode() + body


def request(path: str | Path, method: str, target: str, body: Any = None, *, half_close: bool = True,
            headers: dict[str, str] | None = None, timeout: float = IO_TIMEOUT) -> Response:
    """One request on its own connection, framed like the Rust client."""
    if not half_close:
        headers = {"Connection": "close", **(headers or {})}
    raw = exchange(path, encode_request(method, target, body, headers), half_close, timeout)
    return parse_response(raw, head=method == "HEAD")


class Daemon:
    """One ``twistd coven`` process on one home."""

    def __init__(self, home: Path | None = None, args: tuple[str, ...] = (), env: dict[str, str] | None = None,
                 command: list[str] | None = None) -> None:
        self._owned_dir = None if home else Path(tempfile.mkdtemp(prefix="coven-", dir="/tmp"))
        # Short paths: a Unix socket path must fit in 108 bytes.
        self.home = home or self._owned_dir / "home"  # type: ignore[operator]
        self.socket = self.home / "coven.sock"
        self.args = tuple(args)
        self.command = command or checkout_twistd()
        self.token = uuid.uuid4().hex
        self.env = {k: v for k, v in os.environ.items() if k not in ("COVEN_HOME", "PYTHONPATH")}
        if command is None:
            self.env["PYTHONPATH"] = str(ROOT)
        self.env[TOKEN_VARIABLE] = self.token
        self.env.update(env or {})
        # Beside the home, so it goes with the directory that holds the home.
        self.log_path = self.home.parent / f"daemon-{self.token[:12]}.log"
        self.process: subprocess.Popen[bytes] | None = None

    # lifecycle

    def start(self, wait: bool = True, timeout: float = START_TIMEOUT) -> Daemon:
        """Spawn the daemon; with ``wait``, return once health answers 200."""
        argv = [*self.command, "--nodaemon", "--pidfile=", "coven", "--home", str(self.home), *self.args]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(argv, cwd=tempfile.gettempdir(), env=self.env, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        """Poll the socket until health answers; fail with the log if the daemon dies first."""
        deadline = time.monotonic() + timeout
        while True:
            if self.exited():
                raise AssertionError(f"daemon exited with {self.returncode} before serving:\n{self.output()}")
            try:
                response = self.request("GET", "/api/v1/health", timeout=1.0)
                if response.status == 200:
                    return response.json()
            except (OSError, AssertionError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"daemon not serving after {timeout} s:\n{self.output()}")
            time.sleep(POLL_INTERVAL)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait for the process to end by itself and return its exit status."""
        assert self.process is not None
        return self.process.wait(timeout)

    def send_signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Signal the daemon and assert it exits within ``timeout``; returns Popen's returncode.

        twistd re-raises the signal that stopped it, so a clean SIGTERM stop is ``-SIGTERM``.
        """
        self.send_signal(signum)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"daemon still running {timeout} s after signal {signum}:\n{self.output()}")

    def kill(self) -> int:
        """SIGKILL: a crash, leaving the socket, daemon.json and running rows behind."""
        return self.stop(signal.SIGKILL)

    def close(self) -> None:
        """Kill the daemon and every process carrying its token; remove what it created."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)
        for pid in processes_with_token(self.token):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log_path.unlink(missing_ok=True)
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)

    # state

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def output(self) -> str:
        """Everything the daemon wrote to stdout and stderr so far (twistd logs there)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # talking to it

    def request(self, method: str, target: str, body: Any = None, **kwargs: Any) -> Response:
        return request(self.socket, method, target, body, **kwargs)

    def exchange(self, data: bytes, half_close: bool = True, timeout: float = IO_TIMEOUT) -> bytes:
        return exchange(self.socket, data, half_close, timeout)

    def connect(self) -> socket.socket:
        """A raw connected socket, for tests that misbehave on purpose."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(IO_TIMEOUT)
        sock.connect(str(self.socket))
        return sock


def checkout_twistd() -> list[str]:
    """twistd of the interpreter running the tests; the checkout's plugin comes via PYTHONPATH."""
    script = Path(sys.executable).with_name("twistd")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def processes_with_token(token: str) -> list[int]:
    """Pids whose environment carries ``COVEN_TEST_DAEMON=token``: the daemon and its children."""
    needle = f"{TOKEN_VARIABLE}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found
