"""Resource exhaustion: a store that cannot write, a full disk, no file descriptors or ptys left.

The daemon must say so in health, refuse what it cannot do with a clear envelope, keep
serving everything else, and heal by itself once the resource is back, with every session's
stored events still dense.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.daemon import Daemon
from tests.hostile.conftest import (
    FuzzBed, Mount, check_response, envelope_code, launch_body, open_fds, shell_daemon, wait_until,
)
from tests.hostile.strategies import Request

NO_LIMIT = 1_073_741_823


class FullDisk:
    """A write that finds the database full (``max_page_count``) for as long as ``full`` is set.

    It is the writer's own retry that runs it again, so the store heals the moment room
    returns, exactly as after a real full disk.
    """

    def __init__(self) -> None:
        self.full = threading.Event()
        self.full.set()
        self.tries = 0

    def __call__(self, conn: sqlite3.Connection) -> None:
        self.tries += 1
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages if self.full.is_set() else NO_LIMIT}")
        conn.execute("INSERT OR REPLACE INTO store_meta VALUES ('ballast', ?)", ("x" * 200_000,))


def get(bed: FuzzBed, target: str) -> Any:
    (response,) = bed.ask(Request("GET", target.encode()).encode())
    check_response(response)
    return json.loads(response.body)


def health(bed: FuzzBed) -> dict[str, Any]:
    return get(bed, "/api/v1/health")


def test_a_store_that_cannot_write_is_reported_and_heals(fuzz_bed: FuzzBed) -> None:
    bed = fuzz_bed
    bed.ensure_live()
    session = bed.live()[0]
    disk = FullDisk()
    done = bed.store.writer.submit(disk, wait=True)
    session.append("output", {"data": "written while the disk is full"})
    deadline = time.monotonic() + 10
    while bed.store.writer.state != "failed":
        assert time.monotonic() < deadline, "the writer never reported the failure"
        bed.clock.pump(wait=0.01)

    report = health(bed)
    writer = report["eventWriter"]
    assert writer["state"] == "failed"
    assert writer["lastError"] == "OperationalError: database or disk is full"
    assert writer["queuedEvents"] >= 1
    assert report["storage"]["status"] in ("warning", "critical")
    # Everything that only reads still answers, from memory where the disk has not caught up.
    events = get(bed, f"/api/v1/sessions/{session.id}/events")["events"]
    assert events[-1]["payload_json"] == '{"data":"written while the disk is full"}'
    assert get(bed, f"/api/v1/sessions/{bed.finished_id}")["status"] == "completed"

    disk.full.clear()
    bed.clock.settle(done, what="the retried write")
    bed.flush()
    assert bed.store.writer.state == "healthy" and disk.tries >= 2
    assert "lastError" not in health(bed)["eventWriter"]
    stored = [row[0] for row in bed.store.reader.execute(
        "SELECT seq FROM events WHERE session_id = ? ORDER BY seq", (session.id,))]
    assert stored == list(range(1, session.last_seq + 1))


def test_a_launch_fails_at_once_while_the_store_cannot_write(fuzz_bed: FuzzBed) -> None:
    bed = fuzz_bed
    bed.ensure_live()
    disk = FullDisk()
    done = bed.store.writer.submit(disk, wait=True)
    deadline = time.monotonic() + 10
    while bed.store.writer.state != "failed":
        assert time.monotonic() < deadline, "the writer never reported the failure"
        bed.clock.pump(wait=0.01)
    try:
        from tests.conftest import MemoryConnection

        connection = MemoryConnection(bed.site)
        connection.send(Request("POST", b"/api/v1/sessions", json.dumps(bed.valid_launch).encode()).encode())
        connection.half_close()
        answer_by = time.monotonic() + 2.0
        while not connection.written and time.monotonic() < answer_by:
            bed.clock.pump(wait=0.01)
        answered = connection.written
        connection.drop()
    finally:
        disk.full.clear()
        bed.clock.settle(done, what="the retried write")
    assert answered, "no answer to a launch within 2 s while the store could not write"
    (response,) = connection.responses()
    check_response(response, allow_500=("launch_failed",))
    assert response.status == 500 and envelope_code(response) == "launch_failed"


# a real full disk


def flood_until_full(daemon: Daemon, project: Path) -> str:
    record = daemon.request("POST", "/api/v1/sessions", launch_body(
        project, "stty -echo; yes 'a line of flood to fill the small disk, over and over'")).json()

    def failed() -> dict[str, Any] | None:
        writer = daemon.request("GET", "/api/v1/health").json()["eventWriter"]
        return writer if writer["state"] == "failed" else None

    wait_until(failed, 60, "the writer to report the full disk")
    return record["id"]


def test_a_full_disk_is_reported_survived_and_healed(small_disk: Callable[[str], Mount],
                                                     make_daemon: Callable[..., Daemon], project: Path) -> None:
    disk = small_disk("40m")
    ballast = disk.path / "ballast"
    ballast.write_bytes(b"\0" * (20 * 1024 * 1024))
    daemon = shell_daemon(make_daemon, home=disk.path / "home")
    idle = daemon.request("POST", "/api/v1/sessions", launch_body(project, "exec cat")).json()["id"]
    flood = flood_until_full(daemon, project)

    report = daemon.request("GET", "/api/v1/health").json()
    assert report["eventWriter"]["state"] == "failed"
    assert "full" in report["eventWriter"]["lastError"]
    assert report["storage"]["status"] == "critical" and report["storage"]["maintenanceBlocked"] is True
    wait_until(lambda: daemon.request("GET", "/api/v1/health").json()["eventWriter"]["pausedSessions"] >= 1, 30,
               "the flood to be paused rather than dropped")

    # A launch cannot be stored: it is refused at once with the envelope.
    started = time.monotonic()
    refused = daemon.request("POST", "/api/v1/sessions", launch_body(project, "echo never"), timeout=10)
    assert time.monotonic() - started < 5, "a launch waited for the full disk"
    check_response(refused, allow_500=("launch_failed",))
    assert refused.status == 500 and envelope_code(refused) == "launch_failed", refused.body
    assert "cannot write" in refused.json()["error"]["message"]

    # The daemon stays up and serves what it can: reads, input, a kill.
    for _ in range(20):
        assert daemon.request("GET", "/api/v1/health").status == 200
    assert daemon.request("GET", "/api/v1/sessions").status == 200
    assert daemon.request("POST", f"/api/v1/sessions/{idle}/input", {"data": "still here\r"}).status == 202
    assert daemon.request("POST", f"/api/v1/sessions/{flood}/kill").status == 202
    assert not daemon.exited()

    ballast.unlink()  # room again
    wait_until(lambda: daemon.request("GET", "/api/v1/health").json()["eventWriter"]["state"] == "healthy", 30,
               "the writer to heal")
    failed_id = refused.json()["error"]["details"]["sessionId"]
    wait_until(lambda: daemon.request("GET", f"/api/v1/sessions/{failed_id}").json()["status"] == "failed", 10,
               "the refused launch's row")

    def exited() -> list[dict[str, Any]] | None:
        events = daemon.request("GET", f"/api/v1/events?sessionId={flood}&limit=1000&afterSeq=0").json()
        return events if any(e["kind"] == "exit" for e in events["events"]) or events["hasMore"] else None

    wait_until(exited, 30, "the flood's exit to be stored")
    wait_until(lambda: daemon.request("GET", "/api/v1/health").json()["eventWriter"]["queuedBytes"] == 0, 30,
               "the backlog to drain")
    conn = sqlite3.connect(disk.path / "home" / "coven.sqlite3", timeout=5)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for sid in (flood, idle):
            seqs = [r[0] for r in conn.execute("SELECT seq FROM events WHERE session_id = ? ORDER BY seq", (sid,))]
            last_seq = conn.execute("SELECT last_seq FROM sessions WHERE id = ?", (sid,)).fetchone()[0]
            assert seqs == list(range(1, len(seqs) + 1)) and last_seq == len(seqs), (sid, seqs[-3:], last_seq)
        kinds = [r[0] for r in conn.execute("SELECT kind FROM events WHERE session_id = ? ORDER BY seq", (flood,))]
    finally:
        conn.close()
    assert kinds[-1] == "exit" and "kill" in kinds

    fresh = daemon.request("POST", "/api/v1/sessions", launch_body(project, "echo back in business")).json()
    wait_until(lambda: "back in business" in "".join(
        json.loads(e["payload_json"]).get("data", "")
        for e in daemon.request("GET", f"/api/v1/events?sessionId={fresh['id']}&waitMs=1000").json()["events"]
        if e["kind"] == "output"), 10, "a new session's output")
    assert daemon.request("POST", f"/api/v1/sessions/{idle}/kill").status == 202


# out of file descriptors and ptys


def set_fd_limit(pid: int, limit: int) -> None:
    subprocess.run(["prlimit", "--pid", str(pid), f"--nofile={limit}:"], check=True, timeout=10)


def test_out_of_descriptors_a_launch_is_refused_and_the_daemon_serves_on(
        make_daemon: Callable[..., Daemon], project: Path) -> None:
    daemon = shell_daemon(make_daemon)
    set_fd_limit(daemon.pid, len(open_fds(daemon.pid)) + 16)
    launched, failure = [], None
    for _ in range(40):
        response = daemon.request("POST", "/api/v1/sessions", launch_body(project, "exec cat"))
        if response.status != 201:
            failure = response
            break
        launched.append(response.json()["id"])
    assert failure is not None, "forty sessions fit in sixteen spare descriptors?"
    # Out of descriptors before anything was created: 503 runtime_unavailable, no row. Out of
    # them once the row exists (opening the pty): 500 launch_failed, the row failed.
    check_response(failure, allow_500=("launch_failed", "runtime_unavailable"))
    code = envelope_code(failure)
    assert (failure.status, code) in ((500, "launch_failed"), (503, "runtime_unavailable")), failure.body
    listed = {r["id"]: r["status"] for r in daemon.request("GET", "/api/v1/sessions").json()}
    if code == "launch_failed":
        assert listed[failure.json()["error"]["details"]["sessionId"]] == "failed"
    else:
        assert set(listed) == set(launched), "a refused launch left a row behind"

    # Still serving, and the sessions it has still work.
    assert daemon.request("GET", "/api/v1/health").status == 200
    running = [sid for sid in launched
               if daemon.request("GET", f"/api/v1/sessions/{sid}").json()["status"] == "running"]
    assert len(running) == len(launched)
    assert daemon.request("POST", f"/api/v1/sessions/{running[0]}/input", {"data": "ok\r"}).status == 202
    for sid in running:
        assert daemon.request("POST", f"/api/v1/sessions/{sid}/kill").status == 202
    wait_until(lambda: all(r["status"] != "running" and "pid" not in r
                           for r in daemon.request("GET", "/api/v1/sessions").json()), 20, "the kills")
    again = daemon.request("POST", "/api/v1/sessions", launch_body(project, "exec cat"))
    assert again.status == 201, again.body
    assert not daemon.exited()


def test_out_of_descriptors_no_launch_is_accepted_only_to_die(make_daemon: Callable[..., Daemon],
                                                             project: Path) -> None:
    """At every margin of spare descriptors a launch is shed, refused or really runs.

    Found here: with the pty open but nothing to spare, the forked child died listing its
    descriptors before exec, after the launch had answered 201, its traceback as output.
    """
    daemon = shell_daemon(make_daemon)
    base = len(open_fds(daemon.pid))
    outcomes = []
    for spare in range(0, 6):  # every margin from none to plenty, one launch each
        set_fd_limit(daemon.pid, base + spare)
        try:
            response = daemon.request("POST", "/api/v1/sessions", launch_body(project, "exec cat"))
        except (AssertionError, OSError):
            outcomes.append((spare, "shed"))  # no descriptor even for the connection
            continue
        finally:
            set_fd_limit(daemon.pid, base + 64)
        if response.status != 201:
            check_response(response, allow_500=("launch_failed", "runtime_unavailable"))
            outcomes.append((spare, envelope_code(response)))
            continue
        sid = response.json()["id"]
        page = daemon.request("GET", f"/api/v1/events?sessionId={sid}&waitMs=500").json()
        text = "".join(json.loads(e["payload_json"]).get("data", "") for e in page["events"])
        outcomes.append((spare, "traceback" if "Traceback" in text else "running"))
        daemon.request("POST", f"/api/v1/sessions/{sid}/kill")
    print(f"launch outcome by spare descriptors: {outcomes}")
    assert all(outcome in ("shed", "runtime_unavailable", "launch_failed", "running") for _, outcome in outcomes), outcomes


def test_out_of_descriptors_for_connections_the_daemon_recovers(make_daemon: Callable[..., Daemon]) -> None:
    """Idle connections use up every descriptor. A client arriving then is shed at once (Twisted
    accepts it on a reserved descriptor and closes it) rather than left hanging; once the hogs
    go, everyone is served again. The daemon neither dies nor stops accepting."""
    daemon = make_daemon()
    limit = len(open_fds(daemon.pid)) + 20
    set_fd_limit(daemon.pid, limit)
    hogs = []
    try:
        for _ in range(25):  # more than the daemon can accept
            hogs.append(daemon.connect())
        wait_until(lambda: len(open_fds(daemon.pid)) >= limit, 10, "the daemon to run out of descriptors")
        started = time.monotonic()
        try:
            shed = daemon.request("GET", "/api/v1/health", timeout=10)
        except (AssertionError, OSError):
            shed = None  # dropped without an answer: fine, as long as it was quick
        assert time.monotonic() - started < 5, "a client was left hanging while descriptors ran out"
        assert shed is None or shed.status == 200
    finally:
        for sock in hogs:
            sock.close()
    wait_until(lambda: len(open_fds(daemon.pid)) < limit - 10, 10, "the hogs' descriptors to be closed")
    assert daemon.request("GET", "/api/v1/health").status == 200
    assert not daemon.exited()
