"""Optional live inspection: a Python prompt over SSH on a Unix socket inside the home.

The manhole runs arbitrary Python as the daemon's user, in the reactor thread, on the live
objects. So it listens only on ``<home>/manhole.sock`` (0600, inside the 0700 home), never on
TCP, and lets in only a client holding a key listed in ``<home>/manhole_keys``
(authorized_keys format; any user name). A keys file that is missing, unreadable, not ours,
open to others or not made of public keys turns the manhole off with one log line; the rest of
the daemon runs on. The host key is generated on first use into ``<home>/manhole_host_key``.
"""

from __future__ import annotations

import os
import stat
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.application.service import Service
from twisted.conch import manhole, manhole_ssh
from twisted.conch.checkers import SSHPublicKeyChecker
from twisted.conch.error import ValidPublicKey
from twisted.conch.insults import insults
from twisted.conch.interfaces import IConchUser
from twisted.conch.ssh import keys
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from coven.config import Config


class ManholeRefused(Exception):
    """The manhole cannot be served; the message says why, for the one log line."""


def _open_private(path: Path, what: str) -> bytes:
    """Read a file that must be a regular file of ours that nobody else can read or write."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ManholeRefused(f"{what} {path} does not exist") from None
    except OSError as error:
        raise ManholeRefused(f"{what} {path} cannot be opened: {error.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ManholeRefused(f"{what} {path} is not a regular file")
        if info.st_uid != os.getuid():
            raise ManholeRefused(f"{what} {path} is owned by uid {info.st_uid}, not {os.getuid()}")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise ManholeRefused(f"{what} {path} has mode {mode:04o}; others may read or change it (chmod 600)")
        return f.read()


def load_authorized_keys(path: Path) -> list[keys.Key]:
    """Every public key in an authorized_keys-format file, or ManholeRefused.

    Blank lines and ``#`` comments are skipped; any other line that is not a plain public key
    (options such as ``from=`` are not supported) refuses the whole file, as does a file with
    no key at all.
    """
    found: list[keys.Key] = []
    for number, line in enumerate(_open_private(path, "keys file").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith(b"#"):
            continue
        try:
            key = keys.Key.fromString(line)
        except (keys.BadKeyError, ValueError, IndexError, TypeError):
            raise ManholeRefused(f"keys file {path} line {number} is not an SSH public key") from None
        if not key.isPublic():
            raise ManholeRefused(f"keys file {path} line {number} is a private key; list public keys only")
        found.append(key)
    if not found:
        raise ManholeRefused(f"keys file {path} lists no keys")
    return found


def load_host_key(path: Path) -> keys.Key:
    """The manhole's host key, generated (ed25519, 0600) the first time it is needed."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        pass
    else:
        private = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        with os.fdopen(fd, "wb") as f:
            f.write(private)
    try:
        return keys.Key.fromString(_open_private(path, "host key"))
    except keys.BadKeyError:
        raise ManholeRefused(f"host key {path} cannot be read as a private key; remove it to get a new one") from None


class KeysFileDB:
    """Authorized keys read from the keys file at every login, so edits apply without a restart."""

    log = Logger()

    def __init__(self, path: Path) -> None:
        self._path = path

    def getAuthorizedKeys(self, username: bytes) -> Iterable[keys.Key]:
        try:
            return load_authorized_keys(self._path)
        except ManholeRefused as refused:
            self.log.error("manhole login refused: {reason}", reason=str(refused))
            return []


class KeysFileChecker(SSHPublicKeyChecker):
    """Key authentication that leaves one line per accepted or unknown key in the daemon log."""

    log = Logger()

    def requestAvatarId(self, credentials: Any) -> Deferred:
        fingerprint = _fingerprint(credentials.blob)
        user = credentials.username.decode("utf-8", "replace")

        def accepted(avatar_id: Any) -> Any:
            self.log.info("manhole login user={user} key={key}", user=user, key=fingerprint)
            return avatar_id

        def refused(failure: Failure) -> Failure:
            if failure.check(UnauthorizedLogin) and not failure.check(ValidPublicKey):
                self.log.info("manhole key refused user={user} key={key}", user=user, key=fingerprint)
            return failure

        return super().requestAvatarId(credentials).addCallbacks(accepted, refused)


def _fingerprint(blob: bytes) -> str:
    """The key's fingerprint as ``ssh-keygen -l`` prints it (``SHA256:…``)."""
    try:
        digest = keys.Key.fromString(blob).fingerprint(keys.FingerprintFormats.SHA256_BASE64)
    except (keys.BadKeyError, ValueError):
        return "unreadable"
    return "SHA256:" + digest.rstrip("=")


def live_sessions(supervisor: Any) -> Callable[[], list[str]]:
    """The ``sessions()`` helper of the namespace: ids of the sessions the daemon holds."""

    def sessions() -> list[str]:
        return [record.id for record in supervisor.records()]

    return sessions


def manhole_namespace(config: Config, store: Any, supervisor: Any) -> dict[str, Any]:
    """The names a manhole prompt starts with; ``service`` (the parent) is added at start."""
    return {"config": config, "store": store, "supervisor": supervisor, "sessions": live_sessions(supervisor)}


class _TerminalSession(manhole_ssh.TerminalSession):
    """Follows window resizes and tolerates an input EOF instead of logging NotImplementedError."""

    log = Logger()
    _transport: manhole_ssh.TerminalSessionTransport | None = None

    def openShell(self, proto: Any) -> None:
        self._transport = self.transportFactory(
            proto, self.chainedProtocolFactory(), IConchUser(self.original), self.width, self.height
        )

    def windowChanged(self, newWindowSize: tuple[int, ...]) -> None:
        self.height, self.width = newWindowSize[:2]
        if self._transport is not None:
            self._transport.chainedProtocol.terminalProtocol.terminalSize(self.width, self.height)

    def eofReceived(self) -> None:
        if self._transport is not None:
            self._transport.proto.loseConnection()

    def closed(self) -> None:
        self.log.info("manhole session closed")


class ManholeFactory(manhole_ssh.ConchFactory):
    """ConchFactory with its own key dicts (the base's are shared class attributes), quiet."""

    noisy = False
    _log = Logger(observer=lambda event: None)  # "cannot find moduli file" at every connection

    def __init__(self, portal: Portal, host_key: keys.Key) -> None:
        super().__init__(portal)
        kind = host_key.sshType()
        self.publicKeys = {kind: host_key.public()}
        self.privateKeys = {kind: host_key}
        self.primes = None
        self.connections: weakref.WeakSet[Any] = weakref.WeakSet()

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        self.connections.add(protocol)
        return protocol


def build_factory(namespace: dict[str, Any], keys_path: Path, host_key: keys.Key) -> ManholeFactory:
    realm = manhole_ssh.TerminalRealm()
    realm.sessionFactory = _TerminalSession
    realm.chainedProtocolFactory = lambda: insults.ServerProtocol(manhole.ColoredManhole, namespace)
    checker = KeysFileChecker(KeysFileDB(keys_path))
    return ManholeFactory(Portal(realm, [checker]), host_key)


def clear_stale_socket(path: Path) -> None:
    """Remove a manhole socket a crashed daemon left (we hold the home's lock, so it is ours)."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.getuid():
        raise ManholeRefused(f"socket path {path} is taken by something that is not our socket")
    path.unlink()


class ManholeService(Service):
    """Serves the manhole when its keys file is sound; otherwise says why once and stays off."""

    name = "manhole"
    log = Logger()

    def __init__(self, config: Config, reactor: Any, namespace: dict[str, Any]) -> None:
        self._config = config
        self._reactor = reactor
        self.namespace = namespace
        self._port: Any = None
        self._factory: ManholeFactory | None = None

    def startService(self) -> Deferred:
        super().startService()
        if self.parent is not None:
            self.namespace.setdefault("service", self.parent)
        socket_path = self._config.manhole_socket
        try:
            load_authorized_keys(self._config.manhole_keys)
            host_key = load_host_key(self._config.home / "manhole_host_key")
            clear_stale_socket(socket_path)
        except ManholeRefused as refused:
            self.log.error("manhole disabled: {reason}", reason=str(refused))
            return succeed(None)
        self._factory = build_factory(self.namespace, self._config.manhole_keys, host_key)
        endpoint = UNIXServerEndpoint(self._reactor, str(socket_path), mode=0o600, wantPID=False)

        def listening(port: Any) -> None:
            self._port = port
            self.log.info("manhole listening socket={socket} keys={keys}", socket=str(socket_path),
                          keys=str(self._config.manhole_keys))

        def failed(failure: Failure) -> None:
            self.log.error("manhole disabled: cannot listen on {socket}: {error}", socket=str(socket_path),
                           error=failure.getErrorMessage())

        return endpoint.listen(self._factory).addCallbacks(listening, failed)

    def stopService(self) -> Deferred:
        super().stopService()
        if self._factory is not None:
            for protocol in list(self._factory.connections):
                if protocol.transport is not None:
                    protocol.transport.loseConnection()
        port, self._port = self._port, None
        if port is None:
            return succeed(None)
        return port.stopListening()
