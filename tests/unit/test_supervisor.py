"""The supervisor on a fake clock and a fake runtime: pressure, kill, launch failure, shutdown."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from coven.config import Config
from coven.errors import ApiError
from coven.sessions.launch import parse_launch
from coven.sessions import supervisor as supervisor_module
from coven.sessions.supervisor import Supervisor
from tests.unit.fakes import FakeHandle, FakeStore

SHELL = Path(__file__).resolve().parents[2] / "adapters" / "shell.json"


class FakeRuntime:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.started: list[tuple] = []
        self.fail: Exception | None = None

    def start(self, spec, output, exited):
        if self.fail is not None:
            raise self.fail
        handle = FakeHandle(pid=1000 + len(self.started), dies_on=frozenset({signal.SIGKILL}))
        handle.clock = self.clock
        self.started.append((spec, output, exited, handle))
        return handle


@pytest.fixture
def world(tmp_path):
    clock = Clock()
    config = Config.build(
        {"COVEN_HARNESS_ADAPTER_MANIFEST": str(SHELL), "PATH": "/usr/bin:/bin"}, home=str(tmp_path / "home"),
        hup_grace=1.0, term_grace=2.0,
    )
    store = FakeStore()
    runtime = FakeRuntime(clock)
    supervisor = Supervisor(clock, config, store, runtime)
    project = tmp_path / "project"
    project.mkdir()

    def launch(prompt="cat", **fields):
        plan = parse_launch({"projectRoot": str(project), "harness": "shell", "prompt": prompt, **fields},
                            supervisor.harnesses)
        return supervisor.launch(plan)

    return clock, store, runtime, supervisor, launch


def test_launch_starts_the_program_with_the_contract_argv_and_size(world):
    clock, store, runtime, supervisor, launch = world
    record = launch("echo hi", rows=40, cols=100)
    spec = runtime.started[0][0]
    assert spec.argv == ["sh", "-c", "--", "echo hi"]
    assert (spec.rows, spec.cols) == (40, 100)
    assert spec.env["TERM"] == "xterm-256color"
    assert record.status == "running" and record.pid == 1000
    assert store.inserted[0].id == record.id
    assert supervisor.get(record.id) is not None


def test_spawn_error_fails_the_row_and_answers_launch_failed(world):
    clock, store, runtime, supervisor, launch = world
    runtime.fail = OSError("out of ptys")
    with pytest.raises(ApiError) as raised:
        launch()
    error = raised.value
    assert error.status == 500 and error.code == "launch_failed" and error.message == "out of ptys"
    session_id = error.details["sessionId"]
    assert (session_id, {"status": "failed", "updated_at": store.updates[-1][1]["updated_at"]}) == store.updates[-1]
    assert supervisor.get(session_id) is None


def test_a_failed_launch_is_answered_while_its_row_waits_for_the_store(world):
    clock, store, runtime, supervisor, launch = world
    pending = []
    store.update_session = lambda session_id, wait=False, **fields: pending.append(Deferred()) or pending[-1]
    runtime.fail = OSError("out of ptys")
    with pytest.raises(ApiError) as raised:
        launch()
    session_id = raised.value.details["sessionId"]
    assert supervisor.record(session_id).status == "failed"
    assert [r.status for r in supervisor.records()] == ["failed"]
    pending[0].callback(None)
    assert supervisor.record(session_id) is None


def test_writer_pressure_pauses_every_live_session_and_drain_resumes_them(world):
    clock, store, runtime, supervisor, launch = world
    launch()
    launch()
    handles = [started[3] for started in runtime.started]
    for listener in store.writer.pressure_listeners:
        listener(True)
    assert all(h.paused for h in handles) and supervisor.paused_sessions == 2
    store.writer.pressured = True
    launch()
    assert runtime.started[2][3].paused and supervisor.paused_sessions == 3
    clock.advance(1.5)
    for listener in store.writer.pressure_listeners:
        listener(False)
    assert not any(started[3].paused for started in runtime.started) and supervisor.paused_sessions == 0
    assert supervisor.paused_ms() == 1500


def test_kill_marks_killed_records_it_and_climbs_until_the_group_is_empty(world):
    clock, store, runtime, supervisor, launch = world
    record = launch()
    session = supervisor.get(record.id)
    handle = runtime.started[0][3]
    supervisor.kill(session)
    assert session.record.status == "killed"
    assert [e.kind for e in store.events] == ["kill"]
    clock.advance(1.0)
    clock.advance(2.0)
    assert [s for _, s in handle.signals] == [signal.SIGHUP, signal.SIGTERM, signal.SIGKILL]
    runtime.started[0][2](None, signal.SIGKILL)
    assert [e.kind for e in store.events] == ["kill", "exit"]
    assert supervisor.get(record.id) is None
    assert clock.getDelayedCalls() == []


def test_shutdown_kills_live_sessions_and_waits_for_their_exits(world):
    clock, store, runtime, supervisor, launch = world
    record = launch()
    done = supervisor.shutdown()
    assert not done.called
    assert supervisor.get(record.id).record.status == "killed"
    runtime.started[0][3].alive = False
    runtime.started[0][2](None, signal.SIGHUP)
    assert done.called
    assert clock.getDelayedCalls() == []


def test_a_group_left_behind_after_a_normal_exit_is_reaped(world):
    clock, store, runtime, supervisor, launch = world
    launch()
    handle = runtime.started[0][3]
    runtime.started[0][2](0, None)  # the leader exited; a grandchild is still in the group
    assert [s for _, s in handle.signals] == [signal.SIGHUP]
    clock.advance(1.0)
    clock.advance(2.0)
    assert [s for _, s in handle.signals] == [signal.SIGHUP, signal.SIGTERM, signal.SIGKILL]
    assert clock.getDelayedCalls() == []


def finish(runtime, index: int, output: bytes = b"done\n") -> None:
    _, emit, exited, handle = runtime.started[index]
    emit(output)
    handle.alive = False
    exited(0, None)


def test_a_finished_session_stays_readable_from_memory_for_a_while(world):
    clock, store, runtime, supervisor, launch = world
    record = launch()
    finish(runtime, 0)
    assert supervisor.get(record.id) is None  # no longer live: input, resize and kill are refused
    kept = supervisor.history(record.id)
    assert kept is not None and kept.finished and kept.reaches(0)
    assert [e.kind for e in kept.recent(0)[0]] == ["output", "exit"]
    clock.advance(supervisor_module.FINISHED_SECONDS)
    assert supervisor.history(record.id) is None  # then pages come from SQLite


def test_finished_sessions_kept_in_memory_are_bounded_by_count_and_bytes(world, monkeypatch):
    clock, store, runtime, supervisor, launch = world
    records = [launch() for _ in range(supervisor_module.FINISHED_KEPT + 2)]
    for index in range(len(records)):
        finish(runtime, index)
    kept = [r.id for r in records if supervisor.history(r.id) is not None]
    assert kept == [r.id for r in records[2:]]  # the oldest went first

    monkeypatch.setattr(supervisor_module, "FINISHED_BYTES", 3000)
    big = launch()
    finish(runtime, len(records), b"x" * 2500)
    assert supervisor.history(big.id) is not None
    assert [r.id for r in records if supervisor.history(r.id) is not None] == []


def test_sessions_do_not_inherit_the_daemons_systemd_handoffs(tmp_path):
    config = Config.build(
        {"NOTIFY_SOCKET": "/run/x", "LISTEN_FDS": "1", "WATCHDOG_USEC": "5", "PATH": "/bin", "TERM": "vt100"},
        home=str(tmp_path),
    )
    assert config.child_environ == {"PATH": "/bin", "TERM": "vt100"}


def test_a_pty_handle_pauses_and_resumes_after_its_process_ended():
    """Twisted drops transport.proto at processEnded, yet the exit's last flush may still hit
    backpressure: pausing then must work, or the exit is never recorded."""
    from coven.sessions.runtime import PtyHandle

    class Transport:
        leader = 7
        proto = type("Proto", (), {"paused": False})()
        producing = True

        def pauseProducing(self):
            self.producing = False

        def resumeProducing(self):
            self.producing = True

    transport = Transport()
    protocol = transport.proto
    handle = PtyHandle(transport)
    transport.proto = None  # what processEnded does
    handle.pause()
    assert protocol.paused and not transport.producing
    handle.resume()
    assert not protocol.paused and transport.producing
