"""Shared fixtures.

Real daemons: ``daemon`` is a running daemon in a fresh home; ``make_daemon(...)`` builds more
(extra args, environment, a shared home) and every one is killed at teardown, children too.

In memory: ``store`` is an open Store on the real reactor (its writer is a real thread;
no timer may outlive a test that uses it), ``api`` a context over it with an empty Supervisor, and ``http`` a client that pushes raw
request bytes through the real CovenSite and CovenChannel over a StringTransport and parses
what comes back with the same strict parser the socket tests use.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from tests.daemon import Daemon, Response, encode_request, parse_response

DEFERRED_TIMEOUT = 10.0


def within(d: Deferred, seconds: float = DEFERRED_TIMEOUT) -> Deferred:
    """``d`` with a timeout, so a Deferred that never fires fails the test instead of hanging it."""
    from twisted.internet import reactor

    return d.addTimeout(seconds, reactor)


# real processes


@pytest.fixture
def make_daemon() -> Iterator[Callable[..., Daemon]]:
    """``make_daemon(home=None, args=(), env=None, start=True)``; all are killed at teardown."""
    made: list[Daemon] = []

    def make(home: Path | None = None, args: tuple[str, ...] = (), env: dict[str, str] | None = None,
             start: bool = True, **kwargs: Any) -> Daemon:
        daemon = Daemon(home, args, env, **kwargs)
        made.append(daemon)
        return daemon.start() if start else daemon

    yield make
    for daemon in reversed(made):
        daemon.close()


@pytest.fixture
def daemon(make_daemon: Callable[..., Daemon]) -> Daemon:
    return make_daemon()


# in memory


@pytest.fixture
def config(tmp_path: Path) -> Any:
    from coven.config import Config

    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    return Config.build({}, home=str(home))


@pytest_twisted.async_yield_fixture
async def store(config: Any) -> Any:
    from twisted.internet import reactor

    from coven.store.store import Store
    from coven.wire import timestamp

    opened = Store(reactor, config.database)
    opened.open(timestamp())
    yield opened
    await within(opened.close())
    ours = [call for call in reactor.getDelayedCalls() if not call.func.__module__.startswith("pytest_twisted")]
    assert ours == [], "a timer outlived the test"


@pytest.fixture
def api(config: Any, store: Any) -> Any:
    """What the routes consult: the real config and store, a Supervisor with no sessions."""
    from twisted.internet import reactor

    from coven.api.root import ApiContext
    from coven.sessions.supervisor import Supervisor
    from coven.wire import timestamp

    return ApiContext(config, store, Supervisor(reactor, config, store), timestamp(), reactor)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def http(api: Any, clock: Clock) -> MemoryClient:
    from coven.api.root import build_site

    return MemoryClient(build_site(api, reactor=clock))


class MemoryConnection:
    """One client connection to an in-memory site: bytes in, bytes out, EOFs by hand."""

    def __init__(self, site: Any) -> None:
        self.transport = StringTransport()
        self.channel = site.buildProtocol(None)
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    def half_close(self) -> None:
        """The client's ``shutdown(SHUT_WR)``: the transport reports a read EOF."""
        self.channel.readConnectionLost()

    def drop(self) -> None:
        """The client went away entirely."""
        self.channel.connectionLost(Failure(ConnectionDone()))

    @property
    def written(self) -> bytes:
        return self.transport.value()

    @property
    def closing(self) -> bool:
        """The server asked its transport to close (after flushing what it wrote)."""
        return bool(self.transport.disconnecting)

    def responses(self, head: bool = False) -> list[Response]:
        """Every complete response written so far, each checked for strict framing."""
        data, found = self.written, []
        while data:
            response = parse_response(data, head)
            found.append(response)
            data = data[len(response.raw):]
        return found


class MemoryClient:
    """Requests framed like the Rust client (half-close after sending) through the real site."""

    def __init__(self, site: Any) -> None:
        self.site = site

    def connect(self) -> MemoryConnection:
        return MemoryConnection(self.site)

    def request(self, method: str, target: str, body: Any = None, headers: dict[str, str] | None = None,
                raw: bytes | None = None) -> Response:
        """Send one request, half-close, and return the one complete response."""
        connection = self.connect()
        connection.send(raw if raw is not None else encode_request(method, target, body, headers))
        connection.half_close()
        responses = connection.responses(head=method == "HEAD")
        assert len(responses) == 1, connection.written
        assert connection.closing, "the server must close after answering a half-closed client"
        response = responses[0]
        assert response.header("Content-Type") == "application/json"
        if response.body:
            json.loads(response.body)
        connection.drop()
        return response

    def get(self, target: str, **kwargs: Any) -> Response:
        return self.request("GET", target, **kwargs)

    def post(self, target: str, body: Any = None, **kwargs: Any) -> Response:
        return self.request("POST", target, body, **kwargs)


@pytest.fixture
def logged() -> Iterator[list[dict[str, Any]]]:
    """Every log event emitted during the test."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)
