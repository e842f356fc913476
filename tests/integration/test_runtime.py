"""The pty runtime in this process, on the real reactor: what it hands the supervisor."""

from __future__ import annotations

import os

import pytest
import pytest_twisted
from twisted.internet import process, reactor
from twisted.internet.defer import Deferred

from coven.sessions.runtime import LaunchSpec, PtyRuntime

EXIT_TIMEOUT = 10


@pytest_twisted.ensureDeferred
async def test_a_program_that_ends_before_it_is_registered_keeps_its_pid(monkeypatch: pytest.MonkeyPatch,
                                                                           tmp_path) -> None:
    """Twisted reaps at once a child already gone when it registers it, and forgets its pid.

    The launch answer and the kill ladder still need it: the handle keeps the pid it spawned.
    """
    register = process.registerReapProcessHandler

    def after_the_child_ended(pid: int, proc: object) -> None:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # blocks until it is a zombie; reaps nothing
        register(pid, proc)

    monkeypatch.setattr(process, "registerReapProcessHandler", after_the_child_ended)
    ended: Deferred = Deferred()
    handle = PtyRuntime(reactor).start(
        LaunchSpec("/bin/sh", ["sh", "-c", "exit 3"], str(tmp_path), {"PATH": "/usr/bin:/bin"}),
        lambda data: None,
        lambda code, signum: ended.callback(code),
    )
    assert isinstance(handle.pid, int) and handle.pid > 1
    ended.addTimeout(EXIT_TIMEOUT, reactor)
    assert await ended == 3
    assert not handle.group_alive()
