"""A small asyncio client for load tests: many concurrent requests over the Unix socket.

Each request is framed as the Rust client frames it (explicit Content-Length, then a
half-close) and read to EOF; every wait has a timeout. ``probe_health`` runs in its own
process, so the latency it measures is the daemon's, not this test's event loop's.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.daemon import Response, encode_request, parse_response


CONNECT_RETRIES = {"eagain": 0}


async def connect(path: Path | str, timeout: float = 15.0) -> socket.socket:
    """Connect without blocking the loop; a full listen backlog (EAGAIN) is waited out.

    asyncio's own connect takes EAGAIN from a Unix socket for "in progress" and hands back a
    socket that is not connected; a blocking client (the Rust one) would simply wait in
    ``connect``. Retries are counted in ``CONNECT_RETRIES``.
    """
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(str(path))
            return sock
        except BlockingIOError:
            sock.close()
            CONNECT_RETRIES["eagain"] += 1
            if time.monotonic() > deadline:
                raise TimeoutError(f"listen backlog of {path} stayed full for {timeout} s") from None
            await asyncio.sleep(0.005)
        except BaseException:
            sock.close()
            raise


async def arequest(path: Path | str, method: str, target: str, body: Any = None, timeout: float = 15.0) -> Response:
    async def go() -> Response:
        reader, writer = await asyncio.open_unix_connection(sock=await connect(path, timeout))
        try:
            writer.write(encode_request(method, target, body))
            await writer.drain()
            writer.write_eof()
            data = await reader.read()
        finally:
            writer.close()
        return parse_response(data)

    return await asyncio.wait_for(go(), timeout)


def request_waiting(path: Path | str, method: str, target: str, body: Any = None,
                    timeout: float = 10.0) -> tuple[Response, int]:
    """One request as a blocking client makes it: a full listen backlog is waited out, not an
    error (a timeout makes Python's connect non-blocking, which answers EAGAIN at once instead).
    Returns the response and how many times the backlog was found full."""
    deadline = time.monotonic() + timeout
    full = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        while True:
            try:
                sock.connect(str(path))
                break
            except BlockingIOError:
                full += 1
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.002)
        sock.sendall(encode_request(method, target, body))
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return parse_response(b"".join(chunks)), full


PROBE = r"""
import json, socket, sys, time
path, seconds, interval = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
request = b"GET /api/v1/health HTTP/1.1\r\nHost: coven\r\nContent-Length: 0\r\n\r\n"
latencies, failures, backlog_full = [], [], 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    started = time.monotonic()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(30)
            while True:  # a full listen backlog answers EAGAIN at once: the wait counts as latency
                try:
                    sock.connect(path)
                    break
                except BlockingIOError:
                    backlog_full += 1
                    if time.monotonic() - started > 30:
                        raise
                    time.sleep(0.005)
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        if not data.startswith(b"HTTP/1.1 200 "):
            failures.append(data[:200].decode("latin-1"))
    except OSError as e:
        failures.append(repr(e))
    latencies.append(time.monotonic() - started)
    time.sleep(interval)
print(json.dumps({"latencies": latencies, "failures": failures, "backlogFull": backlog_full}))
"""


class HealthProbe:
    """Polls health from a separate process for ``seconds``; ``result()`` gives the latencies."""

    def __init__(self, socket_path: Path | str, seconds: float, interval: float = 0.05) -> None:
        self.seconds = seconds
        self.process = subprocess.Popen([sys.executable, "-c", PROBE, str(socket_path), str(seconds), str(interval)],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def result(self) -> dict[str, Any]:
        try:
            out, err = self.process.communicate(timeout=self.seconds + 60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(10)
        assert self.process.returncode == 0, err.decode()
        return json.loads(out)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
