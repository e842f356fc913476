"""The daemon as a real process on a real socket: framing, lifecycle, files and crash recovery."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.daemon import Daemon, encode_request, parse_response, read_response

MakeDaemon = Callable[..., Daemon]
REFERENCE_COLUMNS = "id, project_root, harness, title, status, created_at, updated_at"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def refused(make_daemon: MakeDaemon, home: Path, *args: str) -> tuple[int, str]:
    """Start a daemon expected to refuse; return its exit status and what it said."""
    daemon = make_daemon(home=home, args=args, start=False).start(wait=False)
    return daemon.wait(), daemon.output()


def seed_rows(database: Path, *rows: tuple[str, str]) -> None:
    """Write session rows straight into SQLite, as an earlier daemon would have left them."""
    conn = sqlite3.connect(database)
    with conn:
        conn.executemany(
            f"INSERT INTO sessions ({REFERENCE_COLUMNS}) VALUES (?, '/p', 'sh', ?, ?, ?, ?)",
            [(id_, id_, status, "2026-05-09T06:43:00.000000000Z", "2026-05-09T06:43:00.000000000Z")
             for id_, status in rows],
        )
    conn.close()


# framing over the real socket


def test_health_with_curl_framing_on_a_kept_alive_connection(daemon: Daemon) -> None:
    with daemon.connect() as sock:
        for _ in range(2):
            sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/8.5.0\r\n"
                         b"Accept: */*\r\n\r\n")
            response = read_response(sock)
            assert (response.status, response.header("Content-Type")) == (200, "application/json")
            health = response.json()
            assert (health["ok"], health["apiVersion"]) == (True, "coven.daemon.v1")
            assert health["daemon"] == {"pid": daemon.pid, "startedAt": health["daemon"]["startedAt"],
                                        "socket": str(daemon.socket)}


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_real_curl(daemon: Daemon) -> None:
    def curl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["curl", "-sS", "--max-time", "10", "--unix-socket", str(daemon.socket), *args],
                              capture_output=True, text=True, timeout=20)

    health = curl("http://localhost/api/v1/health")
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout)["capabilities"]["structuredErrors"] is True
    missing = curl("-o", "/dev/null", "-w", "%{http_code}", "http://localhost/api/v1/nope")
    assert missing.stdout == "404"
    action = curl("-d", '{"action":"coven.capabilities.refresh"}', "http://localhost/api/v1/actions")
    assert json.loads(action.stdout)["status"] == "completed"


def test_a_half_closed_client_gets_its_full_response(daemon: Daemon) -> None:
    body = json.dumps({"action": "coven.capabilities.refresh", "origin": "x" * 100_000}).encode()
    raw = daemon.exchange(encode_request("POST", "/api/v1/actions", body), half_close=True)
    response = parse_response(raw)
    assert response.raw == raw  # one response, then EOF
    assert response.status == 200 and response.json()["event"]["origin"] == "x" * 100_000


def test_a_body_over_the_cap_is_answered_413_before_it_is_sent(daemon: Daemon) -> None:
    with daemon.connect() as sock:
        sock.sendall(b"POST /api/v1/actions HTTP/1.1\r\nHost: coven\r\nContent-Length: 5000000\r\n\r\n")
        response = parse_response(sock.recv(65536))
    assert response.status == 413
    assert response.json() == {
        "ok": False, "error": {"code": "payload_too_large", "message": "Request body exceeds 4194304-byte limit."},
    }


def test_an_unreadable_request_gets_a_framed_400(daemon: Daemon) -> None:
    response = parse_response(daemon.exchange(b"NOT HTTP\r\n\r\n"))
    assert response.status == 400 and response.json()["error"]["code"] == "invalid_request"


def test_clients_that_vanish_mid_request_do_not_disturb_the_daemon(daemon: Daemon) -> None:
    fragments = [
        b"",
        b"GET /api/v1/hea",
        b"GET /api/v1/health HTTP/1.1\r\nHost: co",
        b"POST /api/v1/actions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"action\":",
        encode_request("GET", "/api/v1/health"),  # complete, but gone before the answer is read
    ]
    for fragment in fragments:
        sock = daemon.connect()
        sock.sendall(fragment)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
    assert daemon.request("GET", "/api/v1/health").status == 200
    assert "Traceback" not in daemon.output()


# lifecycle


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_it_cleanly_and_removes_socket_and_daemon_json(daemon: Daemon, signum: int) -> None:
    assert daemon.socket.exists() and (daemon.home / "daemon.json").exists()
    assert daemon.stop(signum) in (0, -signum)
    assert not daemon.socket.exists()
    assert not (daemon.home / "daemon.json").exists()
    assert "Traceback" not in daemon.output()


def test_a_second_daemon_on_the_same_home_is_refused(daemon: Daemon, make_daemon: MakeDaemon) -> None:
    identity = (daemon.home / "daemon.json").read_text()
    status, output = refused(make_daemon, daemon.home)
    assert status != 0
    assert "another Coven daemon is already serving this home" in output
    assert daemon.request("GET", "/api/v1/health").json()["daemon"]["pid"] == daemon.pid
    assert (daemon.home / "daemon.json").read_text() == identity


def test_a_stale_socket_left_by_a_crash_is_replaced(daemon: Daemon, make_daemon: MakeDaemon) -> None:
    daemon.kill()
    assert stat.S_ISSOCK(daemon.socket.lstat().st_mode) and (daemon.home / "daemon.json").exists()
    again = make_daemon(home=daemon.home)
    assert again.request("GET", "/health").json()["daemon"]["pid"] == again.pid
    assert json.loads((again.home / "daemon.json").read_text())["pid"] == again.pid


@pytest.mark.parametrize("obstacle", ["file", "symlink", "dangling symlink"])
def test_something_else_at_the_socket_path_is_refused_and_kept(
    make_daemon: MakeDaemon, tmp_path: Path, obstacle: str
) -> None:
    probe = make_daemon(start=False)
    probe.home.mkdir(mode=0o700)
    target = tmp_path / "target.sock"
    if obstacle == "file":
        probe.socket.write_text("mine")
    else:
        probe.socket.symlink_to(target if obstacle == "dangling symlink" else tmp_path)
    status, output = refused(make_daemon, probe.home)
    assert status != 0
    expected = "a non-socket file is in the way" if obstacle == "file" else "it is a symlink"
    assert f"refusing socket path {probe.socket}: {expected}" in output
    assert probe.socket.is_symlink() or probe.socket.read_text() == "mine"
    assert not (probe.home / "daemon.json").exists()


def test_a_symlinked_home_is_refused(make_daemon: MakeDaemon) -> None:
    probe = make_daemon(start=False)
    real = probe.home.parent / "real"
    real.mkdir(mode=0o700)
    probe.home.symlink_to(real)
    status, output = refused(make_daemon, probe.home)
    assert status != 0 and f"refusing COVEN_HOME {probe.home}: it is a symlink" in output
    assert list(real.iterdir()) == []


def test_a_store_that_cannot_open_stops_startup_before_the_socket(make_daemon: MakeDaemon) -> None:
    probe = make_daemon(start=False)
    (probe.home / "coven.sqlite3").mkdir(parents=True)
    status, output = refused(make_daemon, probe.home)
    assert status != 0 and "cannot open the store" in output
    assert not probe.socket.exists()


def test_file_modes(make_daemon: MakeDaemon) -> None:
    probe = make_daemon(start=False)
    probe.home.mkdir(mode=0o755)
    os.chmod(probe.home, 0o755)
    daemon = make_daemon(home=probe.home)
    assert mode(daemon.home) == 0o700
    assert mode(daemon.socket) == 0o600
    assert mode(daemon.home / "coven.sqlite3") == 0o600
    assert mode(daemon.home / "daemon.json") == 0o600
    identity = json.loads((daemon.home / "daemon.json").read_text())
    assert identity == daemon.request("GET", "/health").json()["daemon"]
    assert list(identity) == ["pid", "startedAt", "socket"]


def test_socket_option_moves_the_socket(make_daemon: MakeDaemon) -> None:
    probe = make_daemon(start=False)
    elsewhere = probe.home.parent / "elsewhere.sock"
    daemon = make_daemon(home=probe.home, args=("--socket", str(elsewhere)), start=False)
    daemon.socket = elsewhere
    daemon.start()
    assert daemon.request("GET", "/health").json()["daemon"]["socket"] == str(elsewhere)
    assert not (daemon.home / "coven.sock").exists()
    daemon.stop()
    assert not elsewhere.exists()


# crash recovery


def test_running_rows_become_orphaned_after_a_crash_and_stay_committed(daemon: Daemon, make_daemon: MakeDaemon) -> None:
    daemon.kill()
    seed_rows(daemon.home / "coven.sqlite3", ("was-running", "running"), ("finished", "completed"))

    second = make_daemon(home=daemon.home)
    started = second.request("GET", "/health").json()["daemon"]["startedAt"]
    orphan = second.request("GET", "/api/v1/sessions/was-running").json()
    assert (orphan["status"], orphan["updated_at"]) == ("orphaned", started)
    assert second.request("GET", "/api/v1/sessions/finished").json()["status"] == "completed"

    second.kill()  # the recovery the second daemon committed survives a crash too
    third = make_daemon(home=daemon.home)
    listed = {row["id"]: row for row in third.request("GET", "/api/v1/sessions").json()}
    assert (listed["was-running"]["status"], listed["was-running"]["updated_at"]) == ("orphaned", started)
    assert listed["finished"]["status"] == "completed"


def test_an_outside_reader_of_the_live_database_does_not_take_it_over(daemon: Daemon) -> None:
    """`sqlite3 ~/.coven/coven.sqlite3` while the daemon runs must not checkpoint and drop its WAL.

    SQLite's last connection to close a WAL database checkpoints it and deletes the WAL; it knows it
    is last when it can lock the database exclusively. The daemon keeps its shared locks for as long
    as it runs, so the outside reader can neither take that lock nor delete the WAL under it.
    """
    database = daemon.home / "coven.sqlite3"
    daemon.request("GET", "/api/v1/sessions")
    fd = os.open(database, os.O_RDWR)
    try:
        with pytest.raises(OSError):  # SQLite's shared-lock range: held by the daemon's connections
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 510, 0x40000002)
    finally:
        os.close(fd)

    outside = sqlite3.connect(database)
    assert outside.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    outside.close()
    assert (daemon.home / "coven.sqlite3-wal").exists()
    assert daemon.request("GET", "/api/v1/health").json()["storage"]["status"] == "ok"
