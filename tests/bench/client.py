"""A lean keep-alive HTTP client for the daemon's Unix socket, and readers of /proc.

The benchmarks measure the daemon, so the client does as little as it can: one persistent
connection per logical client, requests framed like the Rust client's (``Host``, explicit
``Content-Length``), answers framed by ``Content-Length`` and decoded with msgspec.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from tests.daemon import ROOT, Daemon

SHELL_MANIFEST = ROOT / "adapters" / "shell.json"
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
RECV = 1 << 18


class Event(msgspec.Struct):
    seq: int
    kind: str
    payload_json: str


class Page(msgspec.Struct):
    events: list[Event]
    hasMore: bool = False


class Output(msgspec.Struct):
    data: str = ""


decode_page = msgspec.json.Decoder(Page).decode
decode_output = msgspec.json.Decoder(Output).decode
decode_json = msgspec.json.Decoder().decode
encode_json = msgspec.json.Encoder().encode


class HttpError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:300]!r}")
        self.status = status
        self.body = body


def encode_request(method: str, target: str, body: bytes = b"", close: bool = False) -> bytes:
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: coven\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
    )
    if close:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + body


class Connection:
    """One persistent connection; ``request`` sends and reads one Content-Length-framed answer."""

    def __init__(self, path: str | Path, timeout: float = 120.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self._buffer = b""
        self.last_raw = b""  # the whole last response, head and body

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, method: str, target: str, body: Any = None) -> None:
        if body is not None and not isinstance(body, bytes):
            body = encode_json(body)
        self.sock.sendall(encode_request(method, target, body or b""))

    def receive(self) -> tuple[int, bytes]:
        buffer = self._buffer
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            chunk = self.sock.recv(RECV)
            if not chunk:
                raise ConnectionError("the daemon closed the connection")
            buffer += chunk
        head = buffer[:end].decode("latin-1")
        status = int(head.split(" ", 2)[1])
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        start = end + 4
        need = start + length
        if len(buffer) < need:
            parts = [buffer]
            have = len(buffer)
            while have < need:
                chunk = self.sock.recv(max(RECV, need - have))
                if not chunk:
                    raise ConnectionError("the daemon closed the connection mid-body")
                parts.append(chunk)
                have += len(chunk)
            buffer = b"".join(parts)
        self._buffer = buffer[need:]
        self.last_raw = buffer[:need]
        return status, buffer[start:need]

    def request(self, method: str, target: str, body: Any = None, expect: int | None = None) -> bytes:
        self.send(method, target, body)
        status, answer = self.receive()
        if expect is not None and status != expect:
            raise HttpError(status, answer)
        return answer


# /proc


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (every thread), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """utime + stime per thread id; the reactor thread's id is the process id."""
    found = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            found[int(task)] = cpu_seconds_path(f"/proc/{pid}/task/{task}/stat")
        except OSError:
            pass  # a thread that just ended
    return found


def cpu_seconds_path(path: str) -> float:
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def rss_kib(pid: int) -> int:
    return status_kib(pid, "VmRSS")


def peak_rss_kib(pid: int) -> int:
    return status_kib(pid, "VmHWM")


# the daemon under test


class BenchDaemon:
    """A fresh daemon on a private home that knows the repository's ``shell`` adapter."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.daemon = Daemon(env={"COVEN_HARNESS_ADAPTER_MANIFEST": str(SHELL_MANIFEST), **(env or {})},
                             args=("--hup-grace", "0.2", "--term-grace", "0.5"))
        self.project = Path(tempfile.mkdtemp(prefix="coven-bench-project-"))

    def start(self) -> BenchDaemon:
        self.daemon.start()
        return self

    def close(self) -> None:
        self.daemon.close()
        shutil.rmtree(self.project, ignore_errors=True)

    def restart(self) -> None:
        """Stop the daemon cleanly and start another on the same home: memory starts empty."""
        self.daemon.stop()
        self.daemon.start()

    def __enter__(self) -> BenchDaemon:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def pid(self) -> int:
        return self.daemon.pid

    @property
    def socket(self) -> Path:
        return self.daemon.socket

    def connect(self) -> Connection:
        return Connection(self.daemon.socket)

    def launch_body(self, prompt: str) -> bytes:
        return encode_json({"projectRoot": str(self.project), "harness": "shell", "prompt": prompt})

    def launch(self, conn: Connection, prompt: str) -> str:
        answer = conn.request("POST", "/api/v1/sessions", self.launch_body(prompt), expect=201)
        return decode_json(answer)["id"]

    def health(self, conn: Connection) -> dict[str, Any]:
        return decode_json(conn.request("GET", "/api/v1/health", expect=200))

    def wait_stored(self, conn: Connection, timeout: float = 120.0) -> None:
        """Until the writer has committed everything queued."""
        deadline = time.monotonic() + timeout
        while True:
            storage = self.health(conn)["storage"]
            if not storage.get("writerBacklogEvents") and not storage.get("writerBacklogBytes"):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"writer backlog not drained: {storage}")
            time.sleep(0.002)

    def kill(self, conn: Connection, session_id: str) -> None:
        conn.request("POST", f"/api/v1/sessions/{session_id}/kill", b"{}", expect=202)


def events_target(session_id: str, after: int, limit: int | None = None, wait_ms: int = 0) -> str:
    target = f"/api/v1/events?sessionId={session_id}&afterSeq={after}"
    if limit is not None:
        target += f"&limit={limit}"
    if wait_ms:
        target += f"&waitMs={wait_ms}"
    return target
