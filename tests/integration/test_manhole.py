"""The manhole: its keys file rules, and a real daemon reached over its socket by an SSH client.

The client is Twisted Conch's, in the test's reactor, so the test needs no ssh binary; a second
test drives stock OpenSSH through socat (the README's recipe) where both are installed.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import pytest_twisted
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.conch.ssh import channel, connection, keys, session, transport, userauth
from twisted.internet import protocol
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import UNIXClientEndpoint

from coven.manhole import ManholeRefused, load_authorized_keys, load_host_key
from tests.daemon import ROOT, Daemon

ANSI = re.compile(rb"\x1b(\[[0-9;?]*[A-Za-z]|c)")
TIMEOUT = 15.0
SHELL_MANIFEST = ROOT / "adapters" / "shell.json"  # the repository's `sh -c PROMPT` adapter


def new_key() -> keys.Key:
    return keys.Key(Ed25519PrivateKey.generate())


def write_keys(path: Path, *lines: bytes, mode: int = 0o600) -> Path:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    path.chmod(mode)
    return path


def public_line(key: keys.Key, comment: bytes = b"tester@test") -> bytes:
    return key.public().toString("openssh") + b" " + comment


# the keys file


def test_keys_file_with_comments_and_blank_lines_is_read(tmp_path: Path) -> None:
    first, second = new_key(), new_key()
    path = write_keys(tmp_path / "keys", b"# who may look inside", public_line(first), b"", public_line(second))
    assert load_authorized_keys(path) == [first.public(), second.public()]


@pytest.mark.parametrize(
    ("mode", "content", "why"),
    [
        (0o644, None, "mode 0644"),
        (0o620, None, "mode 0620"),
        (0o604, None, "mode 0604"),
        (0o600, b"ssh-ed25519 not-base64-at-all", "line 1 is not an SSH public key"),
        (0o600, b'from="127.0.0.1" KEY', "line 1 is not an SSH public key"),
        (0o600, b"# only a comment", "lists no keys"),
        (0o600, b"", "lists no keys"),
    ],
)
def test_bad_keys_files_are_refused(tmp_path: Path, mode: int, content: bytes | None, why: str) -> None:
    line = public_line(new_key())
    content = line if content is None else content.replace(b"KEY", line)
    path = write_keys(tmp_path / "keys", content, mode=mode)
    with pytest.raises(ManholeRefused, match=why):
        load_authorized_keys(path)


def test_missing_keys_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ManholeRefused, match="does not exist"):
        load_authorized_keys(tmp_path / "absent")


def test_symlinked_keys_file_is_refused(tmp_path: Path) -> None:
    target = write_keys(tmp_path / "real", public_line(new_key()))
    (tmp_path / "keys").symlink_to(target)
    with pytest.raises(ManholeRefused, match="cannot be opened"):
        load_authorized_keys(tmp_path / "keys")


def test_private_key_in_keys_file_is_refused(tmp_path: Path) -> None:
    private = new_key().toString("openssh")
    path = write_keys(tmp_path / "keys", private)
    with pytest.raises(ManholeRefused):
        load_authorized_keys(path)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give the file away")
def test_keys_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = write_keys(tmp_path / "keys", public_line(new_key()))
    os.chown(path, 65534, 65534)
    with pytest.raises(ManholeRefused, match="owned by uid 65534"):
        load_authorized_keys(path)


def test_host_key_is_made_once_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "manhole_host_key"
    first = load_host_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.sshType() == b"ssh-ed25519" and not first.isPublic()
    assert load_host_key(path) == first


# a live daemon


class _Shell(channel.SSHChannel):
    """Asks for a pty and a shell, types ``typed``, and hands back everything it saw at close."""

    name = b"session"

    def __init__(self, typed: bytes, done: Deferred, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.typed = typed
        self.done = done
        self.received = b""

    def channelOpen(self, specificData: bytes) -> None:
        pty = session.packRequest_pty_req(b"xterm", (24, 80, 0, 0), b"")
        d = self.conn.sendRequest(self, b"pty-req", pty, wantReply=True)
        d.addCallback(lambda _: self.conn.sendRequest(self, b"shell", b"", wantReply=True))
        d.addCallback(lambda _: self.write(self.typed))
        d.addErrback(self.done.errback)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def closed(self) -> None:
        if not self.done.called:
            self.done.callback(self.received)
        self.conn.transport.loseConnection()


class _Connection(connection.SSHConnection):
    def __init__(self, typed: bytes, done: Deferred) -> None:
        super().__init__()
        self.typed, self.done = typed, done

    def serviceStarted(self) -> None:
        self.openChannel(_Shell(self.typed, self.done, conn=self))


class _Auth(userauth.SSHUserAuthClient):
    preferredOrder = [b"publickey"]

    def __init__(self, user: bytes, key: keys.Key, instance: connection.SSHConnection) -> None:
        super().__init__(user, instance)
        self._key = key
        self._offered = False

    def getPublicKey(self) -> keys.Key | None:
        if self._offered:
            return None
        self._offered = True
        return self._key.public()

    def getPrivateKey(self) -> Deferred:
        return succeed(self._key)


class _Transport(transport.SSHClientTransport):
    def verifyHostKey(self, hostKey: bytes, fingerprint: bytes) -> Deferred:
        self.factory.host_key = keys.Key.fromString(hostKey)
        return succeed(True)

    def connectionSecure(self) -> None:
        factory = self.factory
        self.requestService(_Auth(b"tester", factory.key, _Connection(factory.typed, factory.done)))

    def connectionLost(self, reason: object) -> None:
        super().connectionLost(reason)
        if not self.factory.done.called:
            self.factory.done.errback(reason)


def manhole_session(socket_path: Path, key: keys.Key, typed: bytes) -> Deferred:
    """Log in with ``key``, type ``typed``; fires with the screen text, ANSI stripped."""
    from twisted.internet import reactor

    factory = protocol.ClientFactory()
    factory.protocol = _Transport
    factory.key, factory.typed, factory.done = key, typed, Deferred()
    factory.host_key = None
    factory.done.addTimeout(TIMEOUT, reactor)
    factory.done.addCallback(lambda raw: ANSI.sub(b"", raw).decode())
    UNIXClientEndpoint(reactor, str(socket_path)).connect(factory).addErrback(factory.done.errback)
    return factory.done


@pytest.fixture
def manhole_daemon(make_daemon: Callable[..., Daemon]) -> Callable[..., Daemon]:
    """A daemon with ``--manhole`` whose keys file holds ``lines`` (mode ``mode``)."""

    def make(*lines: bytes, mode: int = 0o600, env: dict[str, str] | None = None) -> Daemon:
        daemon = make_daemon(args=("--manhole",), env=env, start=False)
        if lines:
            write_keys(daemon.home / "manhole_keys", *lines, mode=mode)
        return daemon.start()

    return make


@pytest_twisted.ensureDeferred
async def test_manhole_evaluates_in_the_live_daemon(manhole_daemon, tmp_path: Path) -> None:
    key = new_key()
    daemon = manhole_daemon(public_line(key), env={"COVEN_HARNESS_ADAPTER_MANIFEST": str(SHELL_MANIFEST)})
    socket_path = daemon.home / "manhole.sock"
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
    launched = daemon.request("POST", "/api/v1/sessions",
                              {"projectRoot": str(tmp_path), "harness": "shell", "prompt": "sleep 60"})
    assert launched.status == 201, launched.body
    session_id = launched.json()["id"]

    typed = b'("live", len(sessions()), sessions()[0], service.getServiceNamed("api").name)\r\x04'
    screen = await manhole_session(socket_path, key, typed)
    assert f"('live', 1, '{session_id}', 'api')" in screen, screen

    output = daemon.output()
    assert "manhole listening" in output
    assert re.search(r"manhole login user=tester key=SHA256:\S+", output), output
    assert daemon.request("GET", "/api/v1/health").status == 200


@pytest_twisted.ensureDeferred
async def test_manhole_refuses_a_key_not_in_the_file(manhole_daemon) -> None:
    daemon = manhole_daemon(public_line(new_key()))
    with pytest.raises(Exception):
        await manhole_session(daemon.home / "manhole.sock", new_key(), b"1\r\x04")
    assert "manhole key refused user=tester" in daemon.output()
    assert "manhole login user=" not in daemon.output()


@pytest.mark.parametrize(
    ("lines", "mode", "why"),
    [
        ((), 0o600, "does not exist"),
        ((b"KEY",), 0o644, "has mode 0644"),
        ((b"KEY",), 0o660, "has mode 0660"),
        ((b"not a key",), 0o600, "line 1 is not an SSH public key"),
    ],
)
def test_bad_keys_file_turns_the_manhole_off_but_the_api_serves(manhole_daemon, lines, mode, why) -> None:
    key_line = public_line(new_key())
    daemon = manhole_daemon(*(key_line if line == b"KEY" else line for line in lines), mode=mode)
    assert daemon.request("GET", "/api/v1/health").status == 200
    assert not (daemon.home / "manhole.sock").exists()
    refusals = [line for line in daemon.output().splitlines() if "manhole disabled" in line]
    assert len(refusals) == 1, daemon.output()
    assert why in refusals[0]


@pytest.mark.skipif(not (shutil.which("ssh") and shutil.which("socat")), reason="needs OpenSSH's ssh and socat")
def test_stock_ssh_through_socat(manhole_daemon, tmp_path: Path) -> None:
    """The README's recipe, typed at a real ssh."""
    key = new_key()
    identity = tmp_path / "id_ed25519"
    identity.write_bytes(key.toString("openssh"))
    identity.chmod(0o600)
    daemon = manhole_daemon(public_line(key))
    socket_path = daemon.home / "manhole.sock"
    result = subprocess.run(
        ["ssh", "-tt", "-F", "/dev/null", "-i", str(identity), "-o", "IdentitiesOnly=yes",
         "-o", f"UserKnownHostsFile={tmp_path / 'known_hosts'}", "-o", "StrictHostKeyChecking=accept-new",
         "-o", "HostKeyAlias=coven-manhole", "-o", f"ProxyCommand=socat - UNIX-CONNECT:{socket_path}", "coven"],
        input=b'("live", len(sessions()))\r\x04', capture_output=True, timeout=TIMEOUT,
    )
    assert "('live', 0)" in ANSI.sub(b"", result.stdout).decode(), result


def test_manhole_socket_goes_at_stop_and_a_crashed_daemons_is_cleared(make_daemon) -> None:
    daemon = make_daemon(args=("--manhole",), start=False)
    write_keys(daemon.home / "manhole_keys", public_line(new_key()))
    socket_path = daemon.home / "manhole.sock"
    daemon.start()
    daemon.stop()
    assert not socket_path.exists()

    crashed = make_daemon(home=daemon.home, args=("--manhole",))
    assert socket_path.exists()
    crashed.kill()
    assert socket_path.exists()  # a SIGKILLed daemon leaves it behind

    again = make_daemon(home=daemon.home, args=("--manhole",))
    assert "manhole listening" in again.output()
    assert "manhole disabled" not in again.output()
