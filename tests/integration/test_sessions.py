"""Sessions end to end: real ptys, a real daemon, its real socket."""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import output, payload

REFERENCE_KEYS = [
    "id", "project_root", "harness", "title", "status", "exit_code", "archived_at", "created_at",
    "updated_at", "conversation_id", "familiar_id", "execution_binding", "labels", "visibility",
    "external", "transcript_path",
]
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z\Z")


def test_launch_answers_201_with_the_running_record_and_output_follows(sessions, project):
    record = sessions.launch("echo hello from coven")
    assert list(record)[:16] == REFERENCE_KEYS
    assert record["status"] == "running"
    assert record["project_root"] == str(project.resolve())
    assert record["harness"] == "shell" and record["title"] == "echo hello from coven"
    assert record["exit_code"] is None and record["labels"] == [] and record["external"] is False
    assert STAMP.match(record["created_at"]) and record["updated_at"] == record["created_at"]
    assert record["rows"] == 24 and record["cols"] == 80 and isinstance(record["pid"], int)

    events = sessions.until_exit(record["id"])
    assert "hello from coven\r\n" in output(events)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["kind"] == "exit"
    assert payload(events[-1]) == {"exitCode": 0, "signal": None, "status": "completed"}
    assert all(STAMP.match(e["created_at"]) and e["session_id"] == record["id"] for e in events)

    after = sessions.record(record["id"])
    assert after["status"] == "completed" and after["exit_code"] == 0 and "pid" not in after
    assert after["last_seq"] == events[-1]["seq"]


def test_exit_code_and_failure_are_recorded(sessions):
    record = sessions.launch("exit 3")
    events = sessions.until_exit(record["id"])
    assert payload(events[-1]) == {"exitCode": 3, "signal": None, "status": "failed"}
    assert sessions.record(record["id"])["status"] == "failed"
    assert sessions.record(record["id"])["exit_code"] == 3


def test_a_program_that_exits_before_the_answer_still_gets_201_running(sessions):
    record = sessions.launch("true")
    assert record["status"] == "running"
    sessions.until_exit(record["id"])
    assert sessions.record(record["id"])["status"] == "completed"


def test_launch_in_a_subdirectory_and_environment(sessions, project):
    (project / "sub").mkdir()
    record = sessions.launch('pwd; echo "TERM=$TERM"', cwd="sub")
    text = output(sessions.until_exit(record["id"]))
    assert f"{project.resolve()}/sub\r\n" in text
    assert f"TERM={os.environ.get('TERM') or 'xterm-256color'}\r\n" in text  # the daemon's TERM wins
    assert record["cwd"] == str(project.resolve() / "sub")


def test_input_is_written_verbatim_and_echoed_by_cat(sessions):
    record = sessions.launch("cat")
    sessions.send(record["id"], "ping\r")
    events = sessions.until_output(record["id"], "ping\r\n")
    inputs = [e for e in events if e["kind"] == "input"]
    assert [payload(e) for e in inputs] == [{"data": "ping\r"}]
    sessions.send(record["id"], "\x04")  # EOF ends cat
    assert payload(sessions.until_exit(record["id"])[-1])["status"] == "completed"


def held(sock, seconds: float = 0.3) -> bool:
    """True if nothing has been answered on ``sock`` within ``seconds`` (a bounded check)."""
    import select

    readable, _, _ = select.select([sock], [], [], seconds)
    return not readable


def test_long_poll_is_woken_by_output_and_times_out_empty(sessions):
    record = sessions.launch("cat")
    sid = record["id"]
    started = time.monotonic()
    page = sessions.page(sid, waitMs=300)
    assert page == {"events": [], "nextCursor": None, "hasMore": False}
    assert time.monotonic() - started >= 0.29

    from tests.daemon import encode_request, parse_response

    with sessions.daemon.connect() as sock:
        sock.sendall(encode_request("GET", f"/api/v1/events?sessionId={sid}&waitMs=20000"))
        sock.shutdown(socket.SHUT_WR)
        assert held(sock), "an empty page must be held, not answered at once"
        woken = time.monotonic()
        sessions.send(sid, "x")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    page = parse_response(raw).json()
    assert page["events"] and page["events"][0]["kind"] == "input"  # the first event after the cursor
    assert time.monotonic() - woken < 5  # woken by the event, long before waitMs


def test_resize_reaches_the_child(sessions):
    record = sessions.launch("stty size; read line; stty size", rows=30, cols=100)
    sid = record["id"]
    sessions.until_output(sid, "30 100\r\n")
    response = sessions.request("POST", f"/api/v1/sessions/{sid}/resize", {"rows": 50, "cols": 132})
    assert response.status == 202 and response.json() == {"ok": True, "accepted": True}
    sessions.send(sid, "\r")
    events = sessions.until_exit(sid)
    assert "50 132\r\n" in output(events)
    resize = [payload(e) for e in events if e["kind"] == "resize"]
    assert resize == [{"cols": 132, "rows": 50}]
    assert sessions.record(sid)["rows"] == 50


def pids_in_group(pgid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def test_kill_climbs_the_ladder_for_a_stubborn_child_and_its_grandchildren(sessions):
    record = sessions.launch("trap '' HUP TERM; sleep 1000 & sleep 1000 & echo ready; wait")
    sid, pgid = record["id"], record["pid"]
    sessions.until_output(sid, "ready")
    assert len(pids_in_group(pgid)) >= 3
    response = sessions.request("POST", f"/api/v1/sessions/{sid}/kill")
    assert response.status == 202 and response.json() == {"ok": True, "accepted": True}
    assert sessions.record(sid)["status"] == "killed"
    again = sessions.request("POST", f"/api/v1/sessions/{sid}/kill")
    assert again.status == 409 and again.json()["error"]["code"] == "session_not_live"

    events = sessions.until_exit(sid)
    kinds = [e["kind"] for e in events]
    assert kinds.index("kill") < kinds.index("exit") == len(kinds) - 1
    exit_payload = payload(events[-1])
    assert exit_payload["status"] == "killed" and exit_payload["exitCode"] is None
    assert exit_payload["signal"] == "SIGKILL"
    deadline = time.monotonic() + 10
    while pids_in_group(pgid):
        assert time.monotonic() < deadline, pids_in_group(pgid)
        time.sleep(0.05)
    record = sessions.record(sid)
    assert record["status"] == "killed" and record["exit_code"] is None


def test_kill_of_an_obedient_child_ends_with_sighup(sessions):
    record = sessions.launch("echo up; sleep 1000")
    sessions.until_output(record["id"], "up")
    assert sessions.request("POST", f"/api/v1/sessions/{record['id']}/kill").status == 202
    exit_payload = payload(sessions.until_exit(record["id"])[-1])
    assert exit_payload == {"exitCode": None, "signal": "SIGHUP", "status": "killed"}


def test_a_grandchild_holding_the_pty_does_not_delay_the_exit(sessions):
    record = sessions.launch("(trap '' HUP; exec sleep 60) & echo started")
    started = time.monotonic()
    events = sessions.until_exit(record["id"], timeout=20)
    assert time.monotonic() - started < 10
    assert payload(events[-1])["status"] == "completed"


def test_paging_by_every_cursor_form(sessions):
    record = sessions.launch("for i in 1 2 3 4 5; do echo line$i; read x; done")
    sid = record["id"]
    for _ in range(5):
        sessions.send(sid, "\r")
    events = sessions.until_exit(sid)
    total = len(events)
    assert total >= 6

    first = sessions.page(sid, limit=2)
    assert [e["seq"] for e in first["events"]] == [1, 2]
    assert first["nextCursor"] == {"afterSeq": 2} and first["hasMore"] is True
    rest = sessions.page(sid, afterSeq=2)
    assert [e["seq"] for e in rest["events"]] == list(range(3, total + 1))
    assert rest["hasMore"] is False and rest["nextCursor"] == {"afterSeq": total}
    by_id = sessions.page(sid, afterEventId=events[1]["id"], limit=1000)
    assert by_id["events"] == rest["events"] and by_id["hasMore"] is False
    assert sessions.page(sid, afterSeq=total) == {"events": [], "nextCursor": None, "hasMore": False}
    assert sessions.page(sid, afterSeq=total - 1, limit=1)["hasMore"] is False
    both = sessions.page(sid, afterSeq=3, afterEventId=events[0]["id"])
    assert both["events"][0]["seq"] == 4
    clamped = sessions.page(sid, limit=0)
    assert len(clamped["events"]) == 1
    alias = sessions.request("GET", f"/api/v1/sessions/{sid}/events?afterSeq=2").json()
    assert alias == rest
    unversioned = sessions.request("GET", f"/events?sessionId={sid}&afterSeq=2").json()
    assert unversioned == rest

    log = sessions.request("GET", f"/api/v1/sessions/{sid}/log").json()
    assert len(log) == total
    assert log[-1]["message"].startswith("exit: ") and log[-1]["level"] == "info"
    assert any(line["message"] == "> \r" for line in log)


@pytest.mark.parametrize("query, code, status, details", [
    ("", "invalid_request", 400, None),
    ("sessionId=SID&afterSeq=x", "invalid_request", 400, {"afterSeq": "x"}),
    ("sessionId=SID&limit=1.5", "invalid_request", 400, {"limit": "1.5"}),
    ("sessionId=SID&limit=1_0", "invalid_request", 400, {"limit": "1_0"}),
    ("sessionId=SID&afterSeq=%201", "invalid_request", 400, {"afterSeq": "%201"}),
    ("sessionId=SID&afterSeq=99999999999999999999", "invalid_request", 400, {"afterSeq": "99999999999999999999"}),
    ("sessionId=SID&waitMs=60001", "invalid_request", 400, {"waitMs": "60001"}),
    ("sessionId=SID&waitMs=-1", "invalid_request", 400, {"waitMs": "-1"}),
    ("sessionId=nope", "session_not_found", 404, {"sessionId": "nope"}),
    ("sessionId=SID&afterEventId=nope", "event_not_found", 404, {"sessionId": "SID", "afterEventId": "nope"}),
])
def test_event_query_errors(sessions, query, code, status, details):
    sid = sessions.launch("true")["id"]
    sessions.until_exit(sid)
    response = sessions.request("GET", "/api/v1/events?" + query.replace("SID", sid))
    assert response.status == status
    error = response.json()["error"]
    assert error["code"] == code
    if details is not None:
        expected = {k: (v.replace("SID", sid) if isinstance(v, str) else v) for k, v in details.items()}
        assert error["details"] == expected


def test_secrets_are_redacted_in_input_and_output(sessions):
    secret = "sk-" + "a1b2c3d4" * 4
    record = sessions.launch(f"echo OPENAI_API_KEY={secret}; cat")
    sid = record["id"]
    sessions.send(sid, f"token {secret}\r")
    sessions.until_output(sid, "token")
    sessions.send(sid, "\x04")
    events = sessions.until_exit(sid)
    everything = "".join(e["payload_json"] for e in events)
    assert secret not in everything
    assert "[REDACTED]" in output(events)
    assert "[REDACTED]" in "".join(e["payload_json"] for e in events if e["kind"] == "input")


def test_secrets_in_a_flood_are_redacted_wherever_the_reads_split_them(sessions):
    """Megabytes of key lines reach the daemon in reads and 64 KiB events cut anywhere in a line."""
    lines = 40000
    program = f"import sys; sys.stdout.write('OPENAI_API_KEY=sk-{'Q7x' * 15}\\n' * {lines})"
    record = sessions.launch(f"{sys.executable} -c \"{program}\"")
    events = sessions.until_exit(record["id"], timeout=60)
    assert len(events) > 10  # the flood really was cut into many events
    assert output(events) == "[REDACTED]\r\n" * lines


def test_non_utf8_output_becomes_replacement_characters(sessions):
    record = sessions.launch(r"printf 'caf\303\251 \377 done\n'")
    text = output(sessions.until_exit(record["id"]))
    assert "café \ufffd done" in text


def test_fifty_sessions_launched_at_once_all_finish(sessions):
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        records = list(pool.map(lambda i: sessions.launch(f"echo session-{i}"), range(50)))
    assert len({r["id"] for r in records}) == 50
    for i, record in enumerate(records):
        assert f"session-{i}\r\n" in output(sessions.until_exit(record["id"]))
    assert sessions.request("GET", "/api/v1/health").status == 200


def test_client_disconnect_during_long_poll_leaves_the_daemon_serving(sessions):
    sid = sessions.launch("cat")["id"]
    sock = sessions.daemon.connect()
    sock.sendall(f"GET /api/v1/events?sessionId={sid}&waitMs=30000 HTTP/1.1\r\nHost: coven\r\n\r\n".encode())
    assert held(sock)
    sock.close()
    sessions.send(sid, "after\r")
    assert "after" in output(sessions.until_output(sid, "after"))
    assert sessions.request("GET", "/api/v1/health").status == 200


def wait_until_committed(sessions, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while sessions.request("GET", "/api/v1/health").json()["eventWriter"]["queuedEvents"]:
        assert time.monotonic() < deadline, "writer never drained"
        time.sleep(0.02)


def test_restart_keeps_events_and_orphans_live_sessions(make_daemon, sessions):
    finished = sessions.launch("echo kept")
    kept = sessions.until_exit(finished["id"])
    live = sessions.launch("echo alive; sleep 1000")
    sessions.until_output(live["id"], "alive")
    wait_until_committed(sessions)  # followers see events before the disk does; a crash keeps only what is committed
    daemon = sessions.daemon
    daemon.kill()

    again = make_daemon(home=daemon.home, env={"COVEN_HARNESS_ADAPTER_MANIFEST": daemon.env["COVEN_HARNESS_ADAPTER_MANIFEST"]})
    status = again.request("GET", f"/api/v1/sessions/{live['id']}").json()["status"]
    assert status == "orphaned"
    page = again.request("GET", f"/api/v1/events?sessionId={finished['id']}").json()
    assert page["events"] == kept
    again_live = again.request("GET", f"/api/v1/events?sessionId={live['id']}").json()["events"]
    assert "alive" in output(again_live)
    assert [e["seq"] for e in again_live] == list(range(1, len(again_live) + 1))
    live_input = again.request("POST", f"/api/v1/sessions/{live['id']}/input", {"data": "x"})
    assert live_input.status == 409 and live_input.json()["error"]["code"] == "session_not_live"


def test_daemon_stop_kills_live_sessions_and_stores_their_exits(make_daemon, sessions):
    record = sessions.launch("trap '' HUP; echo up; sleep 1000")
    sessions.until_output(record["id"], "up")
    daemon = sessions.daemon
    daemon.stop()
    assert not pids_in_group(record["pid"])

    again = make_daemon(home=daemon.home)
    page = again.request("GET", f"/api/v1/events?sessionId={record['id']}").json()
    assert page["events"][-1]["kind"] == "exit"
    assert payload(page["events"][-1])["signal"] == "SIGTERM"
    assert again.request("GET", f"/api/v1/sessions/{record['id']}").json()["status"] == "killed"
    assert os.path.exists(again.socket)


def test_privacy_toml_extra_patterns_are_redacted_and_a_broken_file_stops_startup(make_daemon, project):
    from tests.integration.conftest import SHELL_MANIFEST, SessionClient

    daemon = make_daemon(start=False, env={"COVEN_HARNESS_ADAPTER_MANIFEST": str(SHELL_MANIFEST)})
    daemon.home.mkdir(parents=True, mode=0o700)
    (daemon.home / "privacy.toml").write_text('extra_patterns = ["hunter[0-9]+"]\n')
    client = SessionClient(daemon.start(), project)
    record = client.launch("echo my password is hunter42")
    events = client.until_exit(record["id"])
    assert "hunter42" not in "".join(e["payload_json"] for e in events)
    assert "my password is [REDACTED]" in output(events)
    daemon.stop()

    (daemon.home / "privacy.toml").write_text("extra_patterns = [\n")
    broken = make_daemon(home=daemon.home, start=False)
    broken.start(wait=False)
    assert broken.wait() != 0
    assert "privacy.toml" in broken.output()


def test_child_leads_its_own_session_on_the_pty_with_default_signals_and_no_stray_descriptors(sessions):
    record = sessions.launch(
        "ps -o pid=,sid=,pgid=,tty= -p $$; tty; grep SigIgn /proc/self/status; exec ls /proc/self/fd"
    )
    text = output(sessions.until_exit(record["id"]))
    pid, sid, pgid, tty = text.split("\r\n")[0].split()
    assert pid == sid == pgid == str(record["pid"])
    assert re.search(r"^/dev/pts/\d+\r$", text, re.M) and tty.startswith("pts/")
    ignored = int(re.search(r"SigIgn:\s+([0-9a-f]+)\r", text).group(1), 16)
    for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGPIPE, signal.SIGTERM, signal.SIGXFSZ):
        assert not ignored & (1 << (signum - 1)), f"{signum!r} is ignored in the child"  # Python ignores SIGPIPE
    descriptors = set(text.strip().split("\r\n")[-1].split())
    assert descriptors <= {"0", "1", "2", "3"}, descriptors  # 3 is ls reading the directory


def test_a_program_that_cannot_exec_is_launch_failed_with_nothing_on_a_pty(sessions, project, tmp_path):
    manifest = tmp_path / "junk.json"
    manifest.write_text('{"adapters":[{"id":"junk","label":"Junk","executable":"junkexe",'
                        '"interactive_prompt_prefix_args":[],"non_interactive_prompt_prefix_args":[],'
                        '"install_hint":"none"}]}')
    junk = project / "junkexe"
    junk.write_bytes(b"\x7fELF\x00garbage")
    junk.chmod(0o755)
    daemon = sessions.daemon
    daemon.stop()
    from tests.daemon import Daemon

    again = Daemon(home=daemon.home, env={"COVEN_HARNESS_ADAPTER_MANIFEST": str(manifest)}).start()
    try:
        response = again.request("POST", "/api/v1/sessions",
                                 {"projectRoot": str(project), "harness": "junk", "prompt": "hi"})
        assert response.status == 500
        error = response.json()["error"]
        assert error["code"] == "launch_failed" and "Exec format error" in error["message"]
        sid = error["details"]["sessionId"]
        assert again.request("GET", f"/api/v1/sessions/{sid}").json()["status"] == "failed"
        assert again.request("GET", f"/api/v1/events?sessionId={sid}").json()["events"] == []
    finally:
        again.close()
