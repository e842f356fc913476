"""Bad input against a real daemon over its real socket, with live sessions to protect.

Two long-lived ``cat`` sessions (raw mode, no echo, output to /dev/null, so only the daemon
adds events to them) take fuzzed input, resize and kill bodies and fuzzed paths and queries.
Every answer is framed JSON in the envelope and never a 500; a rejected request changes no
row, no event and no live session; an accepted one adds exactly what it should. Launches that
pass validation start ``true`` (the ``fuzz`` adapter), never a shell running fuzzed text.
The bugs the fuzzing found are pinned here by name.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.daemon import Daemon
from tests.hostile.conftest import (
    SHELL_MANIFEST, FuzzBed, check_response, envelope_code, launch_body, outcome, parse_responses, snapshot_db,
    wait_until,
)
from tests.hostile.strategies import (
    EXPLORE, LIVE_IDS, SESSION_ROUTES, Request, requests, resolve_ids, with_binding,
)

FAST = settings(max_examples=100, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
SOAK = settings(FAST, max_examples=600, derandomize=not EXPLORE)
HELD_TIMEOUT = 0.5  # a long poll not answered by then is dropped by the client
QUIET_TIMEOUT = 15.0
CAT = "stty raw -echo; exec cat >/dev/null"


def fuzz_manifest(path: Path) -> Path:
    adapters = json.loads(SHELL_MANIFEST.read_text())["adapters"]
    adapters.append({"id": "fuzz", "label": "Fuzz", "executable": "true", "install_hint": "coreutils",
                     "interactive_prompt_prefix_args": [], "non_interactive_prompt_prefix_args": []})
    path.write_text(json.dumps({"adapters": adapters}))
    return path


class DaemonBed:
    """A real daemon, two live cat sessions, a finished one, and the state to compare."""

    def __init__(self, daemon: Daemon, project: Path) -> None:
        self.daemon = daemon
        self.project = project
        self.valid_launch = {"projectRoot": str(project), "harness": "fuzz", "prompt": "hello"}
        self.live: list[str] = []
        self.statuses: dict[str, int] = {}
        finished = self.launch("true")
        wait_until(lambda: self.record(finished)["status"] == "completed", QUIET_TIMEOUT, "`true` to finish")
        self.finished = finished
        self.ensure_live()
        self.fds_at_start = self.fd_count()

    def launch(self, prompt: str) -> str:
        response = self.daemon.request("POST", "/api/v1/sessions", launch_body(self.project, prompt))
        assert response.status == 201, response.body
        return response.json()["id"]

    def record(self, session_id: str) -> dict[str, Any]:
        return self.daemon.request("GET", f"/api/v1/sessions/{session_id}").json()

    def ensure_live(self) -> None:
        self.live = [sid for sid in self.live if self.record(sid)["status"] == "running"]
        while len(self.live) < 2:
            self.live.append(self.launch(CAT))

    def ids(self) -> dict[str, str]:
        return {"@LIVE0@": self.live[0], "@LIVE1@": self.live[1], "@DONE@": self.finished,
                "@UNKNOWN@": "no-such-session"}

    def fd_count(self) -> int:
        return len(list(Path(f"/proc/{self.daemon.pid}/fd").iterdir()))

    def state(self) -> Any:
        """Committed rows and events, and what the API says of each live session."""
        rows = snapshot_db(self.daemon.home / "coven.sqlite3")
        live = [(self.daemon.request("GET", f"/api/v1/sessions/{sid}/events").body, self.record(sid))
                for sid in self.live]
        return rows, live

    def quiet_state(self) -> Any:
        """The state once the writer is empty, nothing but the cats runs, and two looks agree."""
        deadline = time.monotonic() + QUIET_TIMEOUT
        previous = None
        while True:
            health = self.daemon.request("GET", "/api/v1/health").json()["eventWriter"]
            running = [r["id"] for r in self.daemon.request("GET", "/api/v1/sessions").json()
                       if r["status"] == "running" and r["id"] not in self.live]
            current = self.state()
            if not running and health["queuedEvents"] == 0 and health["queuedBytes"] == 0 and current == previous:
                return current
            previous = current
            assert time.monotonic() < deadline, f"daemon never went quiet: running {running}, writer {health}"
            time.sleep(0.02)

    def send(self, raw: bytes, may_hold: bool) -> tuple[bytes, bool]:
        """Send, half-close, read to EOF; a long poll still open after a moment is dropped."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(HELD_TIMEOUT if may_hold else 10.0)
            sock.connect(str(self.daemon.socket))
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            try:
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            except TimeoutError:
                assert may_hold and not chunks, f"no answer in time to {raw[:300]!r}"
                return b"", True
        return b"".join(chunks), False

    def check(self, request: Request) -> None:
        self.ensure_live()
        before = self.quiet_state()
        if request.method == "POST" and b"/kill" in request.target and b"@LIVE" in request.target:
            request.body = with_binding(request.body)  # any other kill body is accepted: a real kill
        raw = resolve_ids(request.encode(), self.ids())
        data, held = self.send(raw, may_hold=b"waitMs=" in request.target)
        responses = parse_responses(data, head=request.method == "HEAD")
        for response in responses:
            check_response(response, allow_500=("launch_failed",), head=request.method == "HEAD")
            key = f"HEAD {response.status}" if request.method == "HEAD" else outcome(response)
            self.statuses[key] = self.statuses.get(key, 0) + 1
        accepted = held or any(r.status < 300 or (r.body and envelope_code(r) == "launch_failed") for r in responses)
        after = self.quiet_state()
        if not accepted:
            assert after == before, f"a rejected request changed state: {raw[:500]!r} -> {responses}"
        elif any(r.status == 202 for r in responses) and b"/input" in request.target:
            self.check_one_event(before, after, "input")
        elif any(r.status == 202 for r in responses) and b"/resize" in request.target:
            self.check_one_event(before, after, "resize")

    def check_one_event(self, before: Any, after: Any, kind: str) -> None:
        """An accepted input or resize adds exactly one event of its kind, to its session only."""
        old, new = set(before[0][1]), set(after[0][1])
        added = new - old
        assert old <= new and len(added) == 1, added
        (event,) = added
        assert kind in event, event


@pytest.fixture
def daemon_bed(make_daemon: Callable[..., Daemon], tmp_path: Path, project: Path) -> DaemonBed:
    manifest = fuzz_manifest(tmp_path / "adapters.json")
    daemon = make_daemon(args=("--hup-grace", "0.3", "--term-grace", "0.7"),
                         env={"COVEN_HARNESS_ADAPTER_MANIFEST": str(manifest)})
    bed = DaemonBed(daemon, project)
    yield bed
    # Every connection the fuzzing opened, answered or dropped, is closed again.
    wait_until(lambda: bed.fd_count() <= bed.fds_at_start, 10, f"daemon fds back to {bed.fds_at_start}")
    print(f"daemon fuzz: {sum(bed.statuses.values())} answers: {bed.statuses}")


def _daemon_request(bed: DaemonBed, data: st.DataObject) -> None:
    request = data.draw(requests(LIVE_IDS, bed.valid_launch, SESSION_ROUTES), label="request")
    bed.check(request)


@FAST
@given(data=st.data())
def test_fuzzed_requests_against_live_sessions(daemon_bed: DaemonBed, data: st.DataObject) -> None:
    _daemon_request(daemon_bed, data)


@pytest.mark.soak
@SOAK
@given(data=st.data())
def test_fuzzed_requests_against_live_sessions_soak(daemon_bed: DaemonBed, data: st.DataObject) -> None:
    _daemon_request(daemon_bed, data)


def test_live_sessions_still_work_after_fuzzing(daemon_bed: DaemonBed) -> None:
    """After a burst of fuzzed bodies the session takes input and dies by kill as usual."""
    bed = daemon_bed
    for body in (b"{", b"[]", b'{"data": 5}', b'{"data": "x", "requestAdoption": {}}', b"\xff\xfe"):
        response = bed.daemon.request("POST", f"/api/v1/sessions/{bed.live[0]}/input", body)
        assert response.status == 400, response.body
    echo = bed.launch("stty -echo; cat")
    assert bed.daemon.request("POST", f"/api/v1/sessions/{echo}/input", {"data": "ping\r"}).status == 202

    def echoed() -> bool:
        page = bed.daemon.request("GET", f"/api/v1/events?sessionId={echo}&waitMs=1000", timeout=5).json()
        return "ping" in "".join(json.loads(e["payload_json"]).get("data", "") for e in page["events"]
                                 if e["kind"] == "output")

    wait_until(echoed, 10, "the echo of ping")
    assert bed.daemon.request("POST", f"/api/v1/sessions/{bed.live[0]}/kill").status == 202

    def exited() -> bool:
        page = bed.daemon.request("GET", f"/api/v1/sessions/{bed.live[0]}/events?waitMs=1000", timeout=5).json()
        return any(e["kind"] == "exit" for e in page["events"])

    wait_until(exited, 10, "the killed cat's exit event")


# in memory: bugs the fuzzing found, pinned one by one


@pytest.mark.parametrize("field", ["projectRoot", "cwd"])
def test_nul_in_a_launch_path_is_a_400(fuzz_bed: FuzzBed, field: str) -> None:
    body = dict(fuzz_bed.valid_launch)
    body[field] = body[field] + "\x00" if field == "projectRoot" else "sub\x00"
    raw = Request("POST", b"/api/v1/sessions", json.dumps(body).encode()).encode()
    (response,) = fuzz_bed.check(raw)
    assert response.status == 400 and envelope_code(response) == "invalid_request"


def test_nul_in_the_prompt_is_refused_before_anything_runs(daemon_bed: DaemonBed) -> None:
    bed = daemon_bed
    response = bed.daemon.request("POST", "/api/v1/sessions", launch_body(bed.project, "echo a\x00b"))
    check_response(response, allow_500=("launch_failed",))
    assert response.status in (400, 500), response.body


@pytest.mark.parametrize("raw", [
    b"HEAD /api/v1/health HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 7\r\n\r\n",
    b"HEAD /api/v1/health HTTP/1.1\r\nBad Name: x\r\n\r\n",
    b"HEAD /api/v1/health HTTP/1.1\r\nContent-Length: 4194305\r\n\r\n",
])
def test_an_unparsable_head_request_gets_headers_only(http: Any, raw: bytes) -> None:
    """Found by fuzzing: the 400 (and 413) written below the resource layer carried a body on HEAD."""
    connection = http.connect()
    connection.send(raw)
    connection.half_close()
    (response,) = connection.responses(head=True)
    assert response.status in (400, 413)
    assert int(response.header("Content-Length")) > 0
    assert connection.written.endswith(b"\r\n\r\n"), connection.written


@pytest.mark.parametrize("content_type", ["\x0b application/json", "multipart/form-data; boundary=x",
                                          "application/x-www-form-urlencoded"])
def test_a_post_whatever_its_content_type_is_read_as_json(fuzz_bed: FuzzBed, content_type: str) -> None:
    """Found by fuzzing: Twisted parsed a POST body as a form when the Content-Type said so, and
    a Content-Type its parser chokes on (a vertical tab) dropped the connection unanswered."""
    body = json.dumps({"action": "coven.capabilities.refresh"}).encode()
    raw = Request("POST", b"/api/v1/actions", body, {"Content-Type": content_type}).encode()
    (response,) = fuzz_bed.check(raw)
    assert response.status == 200, response.body
