"""sd_notify end to end: a fake service manager socket hears READY=1 and STOPPING=1 from twistd."""

from __future__ import annotations

import signal
import socket
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.daemon import Daemon

STOPPED_BY_SIGTERM = -signal.SIGTERM  # twistd re-raises the signal after a clean stop


def messages(sock: socket.socket) -> dict[str, str]:
    lines = sock.recv(4096).decode().splitlines()
    return dict(line.split("=", 1) for line in lines)


@pytest.fixture
def abstract_listener() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd, and the NOTIFY_SOCKET value naming it."""
    name = f"coven-test-notify-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        listener.settimeout(30)
        yield listener, "@" + name


def notify_cycle(make_daemon: Callable[..., Daemon], listener: socket.socket, address: str) -> Daemon:
    daemon = make_daemon(env={"NOTIFY_SOCKET": address}, start=False).start(wait=False)
    ready = messages(listener)
    # READY=1 means the API already answers: what Type=notify ordering relies on.
    assert daemon.request("GET", "/api/v1/health").status == 200
    assert ready["READY"] == "1"
    assert ready["STATUS"] == f"serving {daemon.socket}"

    daemon.send_signal(signal.SIGTERM)
    stopping = messages(listener)
    assert stopping["STOPPING"] == "1"
    # the 1 s + 5 s kill ladder plus the margin for exits and the store flush
    assert int(stopping["EXTEND_TIMEOUT_USEC"]) == 16_000_000
    assert daemon.wait() == STOPPED_BY_SIGTERM
    assert not daemon.socket.exists()
    return daemon


def test_ready_and_stopping_on_an_abstract_socket(make_daemon, abstract_listener) -> None:
    listener, address = abstract_listener
    daemon = notify_cycle(make_daemon, listener, address)
    assert "sd_notify failed" not in daemon.output()


def test_ready_and_stopping_on_a_path_socket(make_daemon, tmp_path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.settimeout(30)
        notify_cycle(make_daemon, listener, str(path))


def test_without_notify_socket_the_daemon_is_unchanged(make_daemon) -> None:
    daemon = make_daemon(start=False)
    daemon.env.pop("NOTIFY_SOCKET", None)
    daemon.start()
    assert daemon.stop() == STOPPED_BY_SIGTERM
    assert not daemon.socket.exists()
    assert "sd_notify" not in daemon.output()


def test_an_unreachable_notify_socket_is_logged_once_and_ignored(make_daemon, tmp_path) -> None:
    daemon = make_daemon(env={"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert daemon.stop() == STOPPED_BY_SIGTERM
    assert daemon.output().count("sd_notify failed") == 1
