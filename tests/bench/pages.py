"""Workload 4: a 1000-event page at concurrency 8, against an asyncio server sending the same bytes.

A session gets well over 1000 events (a ``cat`` with echo off, typed into 1100 times: each
input is an event, and cat's copies of the lines are output events). The page is
``GET /api/v1/events?sessionId=..&afterSeq=0&limit=1000``: while the session is live the
daemon answers from its recent-event cache, and still does for a while after it is killed;
after a daemon restart the same page comes from SQLite. All three are measured.

Load: 8 client threads of the C load tool, for a fixed time, over the daemon's socket; then
the same against ``static_server.py``, a minimal asyncio server that answers every request
with the exact response bytes the daemon sent. Connections are either one per request
(``close``: the request says ``Connection: close``, as the Coven clients open one per call)
or ``keepalive``; both sides get the same. Server CPU per request comes from utime+stime.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.bench.client import BenchDaemon, Connection, cpu_seconds, decode_json, encode_json, encode_request, \
    events_target
from tests.bench.context import Context
from tests.bench.report import Budget, Metric

HERE = Path(__file__).resolve().parent
CONCURRENCY = 8
JUST_FINISHED = "finished session, just now (memory)"
RESTARTED = "finished session, after a restart (SQLite)"
SOURCES = ("live session (memory)", JUST_FINISHED, RESTARTED)
INPUTS = 1100
PAGE = 1000


def fill(bench: BenchDaemon, conn: Connection) -> str:
    """A live session with more than PAGE events of ordinary sizes."""
    session_id = bench.launch(conn, "stty -echo; exec cat")
    time.sleep(0.2)  # let stty run before typing, so nothing is echoed twice
    for i in range(INPUTS):
        line = f"line {i:05d}: the quick brown fox jumps over the lazy dog, {'-' * (i % 60)}\r"
        conn.request("POST", f"/api/v1/sessions/{session_id}/input", encode_json({"data": line}), expect=202)
    deadline = time.monotonic() + 30
    while True:
        page = decode_json(conn.request("GET", events_target(session_id, 0, PAGE), expect=200))
        if len(page["events"]) == PAGE:
            return session_id
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(page['events'])} events")
        time.sleep(0.05)


def capture(socket_path: Path, request: bytes) -> bytes:
    """One whole response from the daemon, head and body, as a load client receives it."""
    with Connection(socket_path) as conn:
        conn.sock.sendall(request)
        status, _ = conn.receive()
        if status != 200:
            raise AssertionError(f"page answered {status}")
        return conn.last_raw


def load(ctx: Context, socket_path: Path, request_file: Path, pid: int, seconds: float, mode: str) -> tuple[float, float]:
    """(requests per second, server CPU ms per request) over ``seconds`` of load."""
    ctx.tools.run("load", socket_path, request_file, CONCURRENCY, min(0.3, seconds), mode)  # warm-up
    cpu0 = cpu_seconds(pid)
    result = ctx.tools.run("load", socket_path, request_file, CONCURRENCY, seconds, mode)
    cpu = cpu_seconds(pid) - cpu0
    if result["errors"] or not result["requests"]:
        raise AssertionError(f"load against {socket_path}: {result}")
    return result["requests"] / result["seconds"], cpu * 1e3 / result["requests"]


class StaticServer:
    def __init__(self, directory: Path, response: bytes) -> None:
        self.socket = directory / "static.sock"
        response_file = directory / "static.response"
        response_file.write_bytes(response)
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "static_server.py"), str(self.socket), str(response_file)],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != b"ready":
            raise RuntimeError("static server did not start")

    @property
    def pid(self) -> int:
        return self.process.pid

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def run(ctx: Context) -> list[Metric]:
    seconds = 1.0 if ctx.quick else 2.5
    metrics: list[Metric] = []
    table: dict[tuple[str, str], tuple[Metric, Metric]] = {}
    for source in SOURCES:
        for mode in ctx.connection_modes:
            name = f"{source}, {mode}"
            rate = Metric("pages", f"{name}: requests/s", "req/s", higher_is_better=True,
                          limit_name=f"minimal asyncio Unix-socket server answering the same bytes, "
                                     f"{CONCURRENCY} concurrent {ctx.tools.kind} clients",
                          budget=Budget("ratio_min", 0.5))
            cpu = Metric("pages", f"{name}: server CPU per request", "ms", limit_name=rate.limit_name)
            table[(source, mode)] = (rate, cpu)
            metrics += [rate, cpu]
    sizes: set[int] = set()
    for i in range(ctx.repeat):
        with BenchDaemon() as bench, bench.connect() as conn:
            ctx.log(f"pages {i + 1}/{ctx.repeat}: filling a session with {INPUTS} inputs")
            session_id = fill(bench, conn)
            target = events_target(session_id, 0, PAGE)
            for source in SOURCES:
                if source == JUST_FINISHED:
                    bench.kill(conn, session_id)
                    deadline = time.monotonic() + 20
                    while decode_json(conn.request("GET", f"/api/v1/sessions/{session_id}"))["status"] == "running" \
                            or not _finished(conn, session_id):
                        if time.monotonic() > deadline:
                            raise TimeoutError("killed session did not finish")
                        time.sleep(0.05)
                    bench.wait_stored(conn)
                elif source == RESTARTED:
                    conn.close()
                    bench.restart()
                for mode in ctx.connection_modes:
                    request = encode_request("GET", target, close=mode == "close")
                    request_file = ctx.tools.dir / "page.request"
                    request_file.write_bytes(request)
                    response = capture(bench.socket, request)
                    sizes.add(len(response))
                    rate, cpu = table[(source, mode)]
                    ctx.log(f"pages {i + 1}/{ctx.repeat}: {source}, {mode}: asyncio server")
                    server = StaticServer(ctx.tools.dir, response)
                    try:
                        limit_rate, limit_cpu = load(ctx, server.socket, request_file, server.pid, seconds, mode)
                    finally:
                        server.close()
                    ctx.log(f"pages {i + 1}/{ctx.repeat}: {source}, {mode}: daemon")
                    daemon_rate, daemon_cpu = load(ctx, bench.socket, request_file, bench.pid, seconds, mode)
                    rate.samples.append(daemon_rate)
                    rate.limit.append(limit_rate)
                    cpu.samples.append(daemon_cpu)
                    cpu.limit.append(limit_cpu)
                    ctx.log(f"  daemon {daemon_rate:.0f} req/s ({daemon_cpu:.2f} ms CPU each), "
                            f"asyncio {limit_rate:.0f} req/s ({limit_cpu:.2f} ms CPU each)")
    first = metrics[0]
    first.note = f"{PAGE}-event page, responses of {', '.join(f'{s / 1024:.0f}' for s in sorted(sizes))} KiB; " \
                 f"{seconds:g} s of load per measurement"
    return metrics


def _finished(conn: Connection, session_id: str) -> bool:
    """The session's last event is its exit."""
    after, last = 0, None
    while True:
        page = decode_json(conn.request("GET", events_target(session_id, after, PAGE), expect=200))
        if page["events"]:
            last = page["events"][-1]
            after = last["seq"]
        if not page["hasMore"]:
            return last is not None and last["kind"] == "exit"
