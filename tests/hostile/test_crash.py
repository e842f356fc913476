"""SIGKILL the daemon in the middle of heavy output, then start another on the same home.

What a crash may lose is only what was not yet committed. What it must not do: leave a
database that fails ``PRAGMA integrity_check``, leave a gap in any session's numbering (events
dense from 1 to the last committed one, ``sessions.last_seq`` equal to it), leave a session
``running`` that nobody holds, or keep the next daemon from serving at once.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.daemon import Daemon
from tests.hostile.conftest import group_alive, launch_body, shell_daemon, wait_until

FLOOD = r"""
import sys
out = sys.stdout.buffer
i = 0
while True:
    out.write(b"%09d flooding the pty with numbered lines\n" % i)
    i += 1
"""
FLOODERS = 4
SERVE_BOUND = 10.0
CRASH_CYCLES = 4


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path, timeout=5)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def committed(path: Path) -> dict[str, tuple[str, int, list[int]]]:
    """Each session's status, last_seq and the seqs of its events, as committed."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        found = {}
        for sid, status, last_seq in conn.execute("SELECT id, status, last_seq FROM sessions"):
            seqs = [row[0] for row in conn.execute("SELECT seq FROM events WHERE session_id = ? ORDER BY seq", (sid,))]
            found[sid] = (status, last_seq, seqs)
        return found
    finally:
        conn.close()


def test_sigkill_in_heavy_output_then_restart(make_daemon: Callable[..., Daemon], project: Path,
                                              tmp_path: Path) -> None:
    (project / "flood.py").write_text(FLOOD)
    first = shell_daemon(make_daemon)
    flooders = [first.request("POST", "/api/v1/sessions",
                              launch_body(project, f"stty -echo; exec {sys.executable} flood.py")).json()
                for _ in range(FLOODERS)]
    idle = first.request("POST", "/api/v1/sessions", launch_body(project, "exec cat")).json()
    done = first.request("POST", "/api/v1/sessions", launch_body(project, "echo finished")).json()
    pids = {record["id"]: record["pid"] for record in [*flooders, idle]}

    def writer() -> dict:
        return first.request("GET", "/api/v1/health").json()["eventWriter"]

    # In the thick of it: thousands of events committed and the writer still busy.
    wait_until(lambda: writer()["committedEvents"] > 2000, 60, "2000 committed events")
    wait_until(lambda: first.request("GET", f"/api/v1/sessions/{done['id']}").json()["status"] == "completed",
               10, "the short session to finish")
    first.kill()

    # The files exactly as the crash left them, checked before anyone recovers them.
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for name in ("coven.sqlite3", "coven.sqlite3-wal", "coven.sqlite3-shm"):
        if (first.home / name).exists():
            shutil.copy2(first.home / name, crashed / name)
    assert integrity(crashed / "coven.sqlite3") == "ok"

    # The sessions lose their terminal with the daemon; nothing of theirs is left running.
    for sid, pid in pids.items():
        wait_until(lambda: not group_alive(pid), 10, f"session {sid}'s process group {pid} to go")

    started = time.monotonic()
    second = shell_daemon(make_daemon, home=first.home)
    serving = time.monotonic() - started
    assert serving < SERVE_BOUND, f"the restarted daemon took {serving:.1f} s to serve"
    # It serves at once: a launch works, old sessions read back.
    fresh = second.request("POST", "/api/v1/sessions", launch_body(project, "echo after the crash")).json()
    assert fresh["status"] == "running"

    database = second.home / "coven.sqlite3"
    assert integrity(database) == "ok"
    rows = committed(database)
    for record in [*flooders, idle]:
        status, last_seq, seqs = rows[record["id"]]
        assert status == "orphaned", (record["id"], status)
        assert seqs == list(range(1, len(seqs) + 1)), f"gap in {record['id']}: {seqs[:5]}..{seqs[-5:]}"
        assert last_seq == len(seqs), (record["id"], last_seq, len(seqs))
        api = second.request("GET", f"/api/v1/sessions/{record['id']}").json()
        assert api["status"] == "orphaned" and api["last_seq"] == last_seq and "pid" not in api
    assert sum(len(rows[r["id"]][2]) for r in flooders) > 2000
    status, last_seq, seqs = rows[done["id"]]
    assert status == "completed" and seqs == list(range(1, last_seq + 1))

    # The event pages of an orphaned session end exactly at its last committed event.
    flooder = flooders[0]["id"]
    after, paged = 0, []
    while True:
        page = second.request("GET", f"/api/v1/events?sessionId={flooder}&afterSeq={after}&limit=1000").json()
        paged += [event["seq"] for event in page["events"]]
        if not page["hasMore"]:
            break
        after = paged[-1]
    assert paged == rows[flooder][2]
    wait = second.request("GET", f"/api/v1/events?sessionId={flooder}&afterSeq={paged[-1]}&waitMs=5000", timeout=3)
    assert wait.status == 200 and json.loads(wait.body)["events"] == [], "an orphaned session is not waited on"


@pytest.mark.soak
def test_crash_again_and_again_with_launches_kills_and_input_in_flight(make_daemon: Callable[..., Daemon],
                                                                       project: Path) -> None:
    """Four crashes in a row, each in the middle of floods, launches, input and kills."""
    (project / "flood.py").write_text(FLOOD)
    daemon = shell_daemon(make_daemon)
    home = daemon.home
    pids: dict[str, int] = {}
    for cycle in range(CRASH_CYCLES):
        stop = threading.Event()
        lock = threading.Lock()

        def launch(prompt: str) -> str:
            response = daemon.request("POST", "/api/v1/sessions", launch_body(project, prompt))
            assert response.status == 201, response.body
            record = response.json()
            with lock:
                pids[record["id"]] = record["pid"]
            return record["id"]

        def churn() -> None:
            """Launch, type into and kill sessions until the daemon dies under it."""
            try:
                while not stop.is_set():
                    sid = launch("exec cat")
                    daemon.request("POST", f"/api/v1/sessions/{sid}/input", {"data": "typed before the crash\r"})
                    daemon.request("POST", f"/api/v1/sessions/{sid}/kill")
            except (OSError, AssertionError, ValueError):
                pass  # the daemon was killed mid-request

        for _ in range(3):
            launch(f"stty -echo; exec {sys.executable} flood.py")
        base = daemon.request("GET", "/api/v1/health").json()["eventWriter"]["committedEvents"]
        churner = threading.Thread(target=churn, daemon=True)
        churner.start()
        wait_until(lambda: daemon.request("GET", "/api/v1/health").json()["eventWriter"]["committedEvents"]
                   > base + 1000, 60, f"cycle {cycle}: a thousand more committed events")
        daemon.kill()
        stop.set()
        churner.join(30)
        for sid, pid in pids.items():
            wait_until(lambda: not group_alive(pid), 10, f"session {sid}'s process group {pid} to go")

        started = time.monotonic()
        daemon = shell_daemon(make_daemon, home=home)
        assert time.monotonic() - started < SERVE_BOUND
        database = home / "coven.sqlite3"
        assert integrity(database) == "ok"
        rows = committed(database)
        for sid, (status, last_seq, seqs) in rows.items():
            assert status != "running", f"cycle {cycle}: {sid} still running after the restart"
            assert seqs == list(range(1, len(seqs) + 1)), f"cycle {cycle}: gap in {sid}"
            assert last_seq == len(seqs), (cycle, sid, last_seq, len(seqs))
        print(f"crash cycle {cycle}: {len(rows)} sessions, {sum(len(r[2]) for r in rows.values())} events, "
              f"{sum(1 for r in rows.values() if r[0] == 'orphaned')} orphaned")
    assert daemon.request("GET", "/api/v1/health").status == 200
