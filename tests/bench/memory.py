"""Workload 3: the daemon's resident memory with 1, 100 and 500 idle sessions.

Each session runs ``cat`` (alive, silent, waiting for input). RSS is the daemon's VmRSS after
the launches settle; the per-session cost is the least-squares slope over the three points
and the base is its intercept (the daemon with zero sessions, warmed by having served
launches). The ``cat`` processes and the kernel's pty buffers are not the daemon's RSS and are
not counted. The daemon runs as it is deployed, without the test extras' pyOpenSSL. There is
no physical limit to compare with; the budgets are absolute.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.bench.client import BenchDaemon, decode_page, events_target, rss_kib
from tests.daemon import ROOT
from tests.bench.context import Context
from tests.bench.report import Budget, Metric

SETTLE = 0.5


def settled_rss(pid: int) -> int:
    time.sleep(SETTLE)
    return rss_kib(pid)


def fit(points: list[tuple[int, int]]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of RSS KiB over session count."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    slope = sxy / sxx
    return mean_y - slope * mean_x, slope


HIDE_TLS = 'import sys\nsys.modules["OpenSSL"] = None  # as if pyOpenSSL were not installed\n'


@contextmanager
def deployed_daemon() -> Iterator[BenchDaemon]:
    """The daemon as `make run` and the package run it: without pyOpenSSL.

    The benchmark's own venv has pyOpenSSL from the test extras (treq), and Twisted's reactor
    imports it, with cryptography, at start: about 12 MiB no deployed daemon carries.
    """
    with tempfile.TemporaryDirectory(prefix="coven-bench-site-") as site:
        Path(site, "sitecustomize.py").write_text(HIDE_TLS)
        with BenchDaemon(env={"PYTHONPATH": f"{ROOT}:{site}"}) as bench:
            yield bench


def run(ctx: Context) -> list[Metric]:
    counts = (1, 100, 500) if not ctx.quick else (1, 50, 200)
    by_count = {n: Metric("memory", f"RSS with {n} idle session{'s' if n > 1 else ''}", "MiB") for n in counts}
    empty = Metric("memory", "RSS after start, no session", "MiB")
    base = Metric("memory", "base (intercept)", "MiB", budget=Budget("value_max", 40))
    per = Metric("memory", "per idle session (slope)", "KiB", budget=Budget("value_max", 16))
    for i in range(ctx.repeat):
        ctx.log(f"memory {i + 1}/{ctx.repeat}: {counts[-1]} idle sessions")
        with deployed_daemon() as bench, bench.connect() as conn:
            bench.health(conn)
            empty.samples.append(settled_rss(bench.pid) / 1024)
            points = []
            launched: list[str] = []
            for n in counts:
                while len(launched) < n:
                    launched.append(bench.launch(conn, "exec cat"))
                # Every session has really started: it answers with no events and is still running.
                for session_id in launched[-1:]:
                    decode_page(conn.request("GET", events_target(session_id, 0, 1), expect=200))
                bench.wait_stored(conn)
                rss = settled_rss(bench.pid)
                points.append((n, rss))
                by_count[n].samples.append(rss / 1024)
            intercept, slope = fit(points)
            base.samples.append(intercept / 1024)
            per.samples.append(slope)
            ctx.log(f"  RSS {', '.join(f'{n}: {r / 1024:.1f} MiB' for n, r in points)}; "
                    f"base {intercept / 1024:.1f} MiB, {slope:.1f} KiB per session")
    empty.note = "the daemon as `make run` and the package run it: without the test extras' pyOpenSSL"
    per.note = "daemon VmRSS only: the sessions' own processes and kernel pty buffers are not counted"
    return [empty, *by_count.values(), base, per]
