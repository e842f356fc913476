"""sd_notify end to end: a fake service manager socket hears READY=1 and STOPPING=1 from twistd."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration._daemon import STOPPED_BY_SIGTERM, Daemon, health


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory: socket paths must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="cvn"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def messages(sock: socket.socket) -> dict[str, str]:
    lines = sock.recv(4096).decode().splitlines()
    return dict(line.split("=", 1) for line in lines)


def run_notify_cycle(home: Path, listener: socket.socket, address: str) -> str:
    daemon = Daemon(home, env={"NOTIFY_SOCKET": address})
    try:
        ready = messages(listener)
        # READY=1 means the API already answers: what Type=notify ordering relies on.
        answer = health(daemon.socket)
        assert answer is not None and answer.startswith(b"HTTP/1.1 200")
        assert ready["READY"] == "1"
        assert ready["STATUS"] == f"serving {daemon.socket}"

        daemon.process.send_signal(signal.SIGTERM)
        stopping = messages(listener)
        assert stopping["STOPPING"] == "1"
        # 1 s + 5 s kill ladder plus the margin for exits and the store flush.
        assert int(stopping["EXTEND_TIMEOUT_USEC"]) == 16_000_000
        assert daemon.process.wait(30) == STOPPED_BY_SIGTERM
        assert not daemon.socket.exists()
    finally:
        daemon.stop()
    return daemon.log()


def test_ready_and_stopping_on_a_path_socket(short_tmp: Path) -> None:
    address = short_tmp / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(address))
        listener.settimeout(30)
        log = run_notify_cycle(short_tmp / "home", listener, str(address))
    assert "sd_notify failed" not in log


def test_ready_and_stopping_on_an_abstract_socket(short_tmp: Path) -> None:
    name = f"coven-test-{os.getpid()}-{short_tmp.name}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        listener.settimeout(30)
        run_notify_cycle(short_tmp / "home", listener, "@" + name)


def test_without_notify_socket_the_daemon_is_unchanged(short_tmp: Path) -> None:
    daemon = Daemon(short_tmp / "home")
    try:
        daemon.wait_healthy()
        assert daemon.stop() == STOPPED_BY_SIGTERM
    finally:
        daemon.stop()
    assert not daemon.socket.exists()
    assert "sd_notify" not in daemon.log()


def test_an_unreachable_notify_socket_is_logged_once_and_ignored(short_tmp: Path) -> None:
    daemon = Daemon(short_tmp / "home", env={"NOTIFY_SOCKET": str(short_tmp / "nobody-listens")})
    try:
        daemon.wait_healthy()
        assert daemon.stop() == STOPPED_BY_SIGTERM
    finally:
        daemon.stop()
    assert daemon.log().count("sd_notify failed") == 1
