"""Workload 2: launch request to first output byte, alone and 50 at once, fresh and grown.

Daemon side: on a keep-alive connection, POST a session whose program is ``sh -c 'echo x'``,
then long-poll its events from ``afterSeq=0`` until the first output event; the clock runs
from the POST until that page is read. "50 at once": 50 clients, each with its own open
connection, start together; each latency runs from the common start.

Limit: the same ``sh -c 'echo x'`` forked and exec'd in a fresh pty by a bare C program (one
at a time, and 50 spawned back to back), timed to the first readable byte.

Grown: the same measurement after the daemon has run many short sessions (rows and events in
the store) and holds many live sessions with full recent-event caches.
"""

from __future__ import annotations

import threading
import time

from tests.bench.client import BenchDaemon, Connection, decode_page, events_target, rss_kib
from tests.bench.context import Context
from tests.bench.report import Budget, Metric, median, percentile

PROMPT = "echo x"
BURST = 50


def first_output(bench: BenchDaemon, conn: Connection, prompt: str = PROMPT) -> float:
    """Seconds from sending the launch to reading the page holding its first output event."""
    t0 = time.perf_counter()
    session_id = bench.launch(conn, prompt)
    after = 0
    while True:
        page = decode_page(conn.request("GET", events_target(session_id, after, 10, 5000), expect=200))
        for event in page.events:
            if event.kind == "output":
                return time.perf_counter() - t0
            after = event.seq
        if time.perf_counter() - t0 > 30:
            raise TimeoutError(f"no output from session {session_id}")


def sequential(bench: BenchDaemon, count: int) -> list[float]:
    with bench.connect() as conn:
        return [first_output(bench, conn) * 1e3 for _ in range(count)]


def burst(bench: BenchDaemon, count: int) -> list[float]:
    """``count`` clients launch at once; each one's latency from the common start, in ms."""
    conns = [bench.connect() for _ in range(count)]
    gate = threading.Barrier(count + 1)
    results: list[float] = [0.0] * count
    errors: list[BaseException] = []
    start = [0.0]

    def client(i: int) -> None:
        try:
            gate.wait()
            first_output(bench, conns[i])
            results[i] = (time.perf_counter() - start[0]) * 1e3
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    start[0] = time.perf_counter()
    gate.wait()
    for thread in threads:
        thread.join()
    for conn in conns:
        conn.close()
    if errors:
        raise errors[0]
    return results


def grow(ctx: Context, bench: BenchDaemon, finished: int, live: int) -> int:
    """Run ``finished`` short sessions to completion and leave ``live`` ones holding ~1 MiB of
    recent output each; returns the number of live sessions."""
    gen = ctx.tools.gen_command(1 << 20)
    with bench.connect() as conn:
        ids = []
        for i in range(finished):
            ids.append(bench.launch(conn, f"printf 'session %s done\\n' {i}"))
        for _ in range(live):
            bench.launch(conn, f"{gen}; exec cat")
        # Wait until the short ones are gone from the live set and the writer is idle.
        deadline = time.monotonic() + 60
        for session_id in ids:
            while True:
                page = decode_page(conn.request("GET", events_target(session_id, 0, 1000, 5000), expect=200))
                if any(e.kind == "exit" for e in page.events):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError("grown sessions did not finish")
        time.sleep(0.5)
        bench.wait_stored(conn)
    return live


def run(ctx: Context) -> list[Metric]:
    tools = ctx.tools
    count = ctx.scale(20, 10)
    finished, live = ctx.scale(500, 100), ctx.scale(40, 10)
    limit_name = f"{tools.kind} fork/exec of `sh -c 'echo x'` in a fresh pty, to first byte"
    seq = Metric("launch", "one at a time, to first byte", "ms", limit_name=limit_name, budget=Budget("ratio_max", 4))
    burst_median = Metric("launch", f"{BURST} at once: median", "ms", limit_name=limit_name,
                          budget=Budget("ratio_max", 4))
    burst_last = Metric("launch", f"{BURST} at once: last first byte", "ms", limit_name=limit_name,
                        budget=Budget("ratio_max", 4))
    grown_seq = Metric("launch", "grown daemon: one at a time", "ms", limit_name=limit_name,
                       budget=Budget("ratio_max", 4))
    grown_burst = Metric("launch", f"grown daemon: {BURST} at once, median", "ms", limit_name=limit_name,
                         budget=Budget("ratio_max", 4))
    growth = Metric("launch", "grown / fresh (one at a time)", "x")
    grown_rss = Metric("launch", "grown daemon RSS", "MiB")
    for i in range(ctx.repeat):
        ctx.log(f"launch {i + 1}/{ctx.repeat}: C fork/exec")
        bare_seq = tools.run("launch", count, 1, "--", "sh", "-c", PROMPT)["latencyUs"]
        bare_burst = tools.run("launch", BURST, BURST, "--", "sh", "-c", PROMPT)["latencyUs"]
        for metric in (seq, grown_seq):
            metric.limit.append(median(bare_seq) / 1e3)
        for metric in (burst_median, grown_burst):
            metric.limit.append(median(bare_burst) / 1e3)
        burst_last.limit.append(max(bare_burst) / 1e3)
        ctx.log(f"launch {i + 1}/{ctx.repeat}: daemon")
        with BenchDaemon() as bench:
            sequential(bench, 3)  # warm: imports, first fork, sqlite pages
            fresh = sequential(bench, count)
            seq.samples.append(median(fresh))
            latencies = burst(bench, BURST)
            burst_median.samples.append(median(latencies))
            burst_last.samples.append(max(latencies))
            ctx.log(f"launch {i + 1}/{ctx.repeat}: growing the daemon ({finished} finished, {live} live sessions)")
            grow(ctx, bench, finished, live)
            grown = sequential(bench, count)
            grown_seq.samples.append(median(grown))
            grown_burst.samples.append(median(burst(bench, BURST)))
            growth.samples.append(median(grown) / median(fresh))
            grown_rss.samples.append(rss_kib(bench.pid) / 1024)
        ctx.log(f"  daemon {seq.samples[-1]:.2f} ms (p90 {percentile(fresh, 0.9):.2f}), grown "
                f"{grown_seq.samples[-1]:.2f} ms; C {seq.limit[-1]:.2f} ms; burst median "
                f"{burst_median.samples[-1]:.1f} ms vs C {burst_median.limit[-1]:.1f} ms")
    grown_seq.note = (f"after {finished} finished sessions and {live} live ones holding ~1 MiB of "
                      "recent output each")
    return [seq, burst_median, burst_last, grown_seq, grown_burst, growth, grown_rss]
