"""Notifier: the datagram it sends, the addresses it understands, and silence without systemd."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from coven.notify import Notifier, notify_address


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/run/user/1000/systemd/notify", "/run/user/1000/systemd/notify"),
        ("@/org/freedesktop/systemd1/notify/42", "\0/org/freedesktop/systemd1/notify/42"),
        ("", None),
        ("vsock:2:1234", None),
    ],
)
def test_notify_address(value: str, expected: str | None) -> None:
    assert notify_address({"NOTIFY_SOCKET": value}) == expected


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready("serving") is False


def test_ready_sends_one_datagram_of_key_value_lines(tmp_path: Path) -> None:
    address = tmp_path / "n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(address))
        notifier = Notifier({"NOTIFY_SOCKET": str(address)})
        assert notifier.ready("serving /x/coven.sock")
        assert listener.recv(4096) == b"READY=1\nSTATUS=serving /x/coven.sock"
        assert notifier.stopping("stopping", extend_seconds=16)
        assert listener.recv(4096) == b"STOPPING=1\nSTATUS=stopping\nEXTEND_TIMEOUT_USEC=16000000"


def test_a_failed_send_returns_false_and_does_not_raise(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "absent")})
    assert notifier.ready("serving") is False
    assert notifier.status("still here") is False
