"""Load: 200 long-polling followers, 50 sessions printing, launches and kills all the while.

Throughout, health answers within a bound set relative to the same daemon's idle latency;
every follower sees its session's events dense and in order. Afterwards nothing is left
over: the daemon's file descriptors are back to where they were, no session's process group
survives, the daemon has no children, and its memory grew by a bounded amount.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.daemon import Daemon
from tests.hostile.conftest import (
    children_of, group_alive, launch_body, open_fds, rss_kib, shell_daemon, wait_until,
)
from tests.hostile.load import CONNECT_RETRIES, HealthProbe, arequest, percentile

pytestmark = pytest.mark.soak

TICKER = r"""
import sys, time
out = sys.stdout.buffer
i = 0
while True:
    out.write(b"%08d tick\n" % i)
    if i % 200 == 199:
        out.write(b"burst " * 5000 + b"\n")
    out.flush()
    i += 1
    time.sleep(0.02)
"""
PRINTERS = 50
FOLLOWERS = 200
FIRST_ROUND_SECONDS = 15.0
LOAD_SECONDS = 15.0
CHURN_AT_ONCE = 4
IDLE_SAMPLES = 40
# Health under load may be slower than idle, but not by much: the reactor must keep turning.
LATENCY_FACTOR = 50
LATENCY_FLOOR = 1.0
MEMORY_GROWTH_MIB = 96
REPEAT_GROWTH_MIB = 16


def kill_all(daemon: Daemon, ids: list[str]) -> None:
    for sid in ids:
        daemon.request("POST", f"/api/v1/sessions/{sid}/kill")


def finished(daemon: Daemon, ids: list[str]) -> bool:
    records = {r["id"]: r for r in daemon.request("GET", "/api/v1/sessions").json()}
    return all(records[sid]["status"] != "running" and "pid" not in records[sid] for sid in ids)


async def follow(path: Path, session_id: str, until: float, seen: dict[str, int]) -> int:
    """Long-poll one session by cursor until ``until``; the seqs must run on without a gap."""
    after, pages = 0, 0
    while time.monotonic() < until:
        response = await arequest(path, "GET", f"/api/v1/events?sessionId={session_id}&afterSeq={after}"
                                               f"&limit=1000&waitMs=2000", timeout=30)
        assert response.status == 200, response.body[:300]
        events = json.loads(response.body)["events"]
        for event in events:
            assert event["seq"] == after + 1, f"{session_id}: expected seq {after + 1}, got {event['seq']}"
            after = event["seq"]
        pages += 1
    seen[session_id] = max(seen.get(session_id, 0), after)
    return pages


async def churn(path: Path, project: Path, until: float, launched: dict[str, int]) -> None:
    """Launch a session, let it live a moment, kill it; again and again."""
    while time.monotonic() < until:
        response = await arequest(path, "POST", "/api/v1/sessions", launch_body(project, "exec cat"))
        assert response.status == 201, response.body
        record = json.loads(response.body)
        launched[record["id"]] = record["pid"]
        await asyncio.sleep(random.uniform(0.05, 0.5))
        kill = await arequest(path, "POST", f"/api/v1/sessions/{record['id']}/kill")
        assert kill.status == 202, kill.body


async def load(daemon: Daemon, project: Path, printers: list[str], seconds: float) -> dict[str, Any]:
    until = time.monotonic() + seconds
    seen: dict[str, int] = {}
    launched: dict[str, int] = {}
    followers = [follow(daemon.socket, printers[i % len(printers)], until, seen) for i in range(FOLLOWERS)]
    churners = [churn(daemon.socket, project, until, launched) for _ in range(CHURN_AT_ONCE)]
    results = await asyncio.gather(*followers, *churners)
    return {"pages": sum(results[:FOLLOWERS]), "seen": seen, "launched": launched}


def one_round(daemon: Daemon, project: Path, seconds: float, bound: float, fds_before: list[str]) -> dict[str, Any]:
    """Printers up, followers and churn for ``seconds``, everything killed; checks and numbers."""
    printers = [daemon.request("POST", "/api/v1/sessions",
                               launch_body(project, f"stty -echo; exec {sys.executable} ticker.py")).json()
                for _ in range(PRINTERS)]
    printer_ids = [p["id"] for p in printers]
    probe = HealthProbe(daemon.socket, seconds=seconds + 5)
    try:
        outcome = asyncio.run(load(daemon, project, printer_ids, seconds))
        under_load = probe.result()
    finally:
        probe.close()
    kill_all(daemon, printer_ids)
    every = printer_ids + list(outcome["launched"])
    wait_until(lambda: finished(daemon, every), 60, "every session to exit")

    latencies = under_load["latencies"]
    worst = max(latencies)
    print(f"\nload: {len(outcome['launched'])} launched and killed, {outcome['pages']} pages followed; health "
          f"under load p50 {percentile(latencies, 0.5) * 1000:.1f} ms p99 {percentile(latencies, 0.99) * 1000:.1f} ms "
          f"worst {worst * 1000:.1f} ms (bound {bound * 1000:.0f} ms) over {len(latencies)} probes; a full listen "
          f"backlog answered EAGAIN {CONNECT_RETRIES['eagain']} times to the clients, "
          f"{under_load['backlogFull']} times to the health probe")
    assert not under_load["failures"], under_load["failures"][:5]
    assert worst < bound, f"health took {worst:.2f} s under load (bound {bound:.2f} s)"
    assert len(outcome["seen"]) == PRINTERS and all(outcome["seen"].values()), "some printer was never followed"
    assert len(outcome["launched"]) > 10, "the churn barely ran"

    # Nothing left over: every process group gone, no children, the same descriptors.
    pids = {p["id"]: p["pid"] for p in printers} | outcome["launched"]
    for sid, pid in pids.items():
        wait_until(lambda: not group_alive(pid), 10, f"session {sid}'s process group {pid} to go")
    wait_until(lambda: not children_of(daemon.pid), 10, f"the daemon's children to be reaped: {children_of(daemon.pid)}")
    wait_until(lambda: not Counter(open_fds(daemon.pid)) - Counter(fds_before), 10,
               f"no descriptor beyond the {len(fds_before)} from before the load")
    for sid in printer_ids[:5]:  # and the stored logs are dense from 1
        page = daemon.request("GET", f"/api/v1/events?sessionId={sid}&limit=1000").json()
        assert [e["seq"] for e in page["events"]] == list(range(1, len(page["events"]) + 1))
    return outcome


def test_two_hundred_followers_fifty_printers_and_churn(make_daemon: Callable[..., Daemon], project: Path) -> None:
    (project / "ticker.py").write_text(TICKER)
    daemon = shell_daemon(make_daemon)

    # Warm up (first launch, first events, the writer's connection), then take the baselines.
    warm = daemon.request("POST", "/api/v1/sessions", launch_body(project, "echo warm")).json()["id"]
    wait_until(lambda: finished(daemon, [warm]), 10, "the warm-up session")
    fds_before = sorted(open_fds(daemon.pid))
    idle = HealthProbe(daemon.socket, seconds=IDLE_SAMPLES * 0.05, interval=0.05).result()
    assert not idle["failures"], idle["failures"]
    idle_median = percentile(idle["latencies"], 0.5)
    bound = max(LATENCY_FLOOR, LATENCY_FACTOR * idle_median)
    print(f"\nload: health idle median {idle_median * 1000:.1f} ms")
    rss_idle = rss_kib(daemon.pid)

    # The first round grows the daemon to its working size; the second must not grow it much more.
    one_round(daemon, project, FIRST_ROUND_SECONDS, bound, fds_before)
    rss_first = rss_kib(daemon.pid)
    one_round(daemon, project, LOAD_SECONDS, bound, fds_before)
    rss_second = rss_kib(daemon.pid)
    print(f"load: daemon RSS idle {rss_idle / 1024:.1f} MiB, after round one {rss_first / 1024:.1f} MiB, "
          f"after round two {rss_second / 1024:.1f} MiB")
    assert (rss_second - rss_idle) / 1024 < MEMORY_GROWTH_MIB, "daemon memory grew beyond its bound"
    assert (rss_second - rss_first) / 1024 < REPEAT_GROWTH_MIB, "a second round of the same load grew the daemon again"
