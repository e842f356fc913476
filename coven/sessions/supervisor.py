"""The supervisor: every live session is launched, typed into, resized and killed here."""

from __future__ import annotations

import os
import uuid
from collections import OrderedDict
from typing import Any, NoReturn

import msgspec
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from coven.config import Config
from coven.errors import ApiError
from coven.home import HomeRefused
from coven.redaction import Redactor
from coven.sessions.harness import HarnessRegistry, UnsafeModel
from coven.sessions.ladder import KillLadder
from coven.sessions.launch import LaunchPlan
from coven.sessions.runtime import LaunchSpec, PtyRuntime
from coven.sessions.session import Session
from coven.wire import SessionRecord, timestamp


class LaunchFailed(Exception):
    """The row exists but the program could not be started."""


# A session that just finished keeps its recent events in memory for a while: clients read
# the end of what an agent did right after it exits, and that should not cost SQLite reads.
FINISHED_KEPT = 32
FINISHED_BYTES = 16 * 1024 * 1024
FINISHED_SECONDS = 300.0


class Supervisor:
    """Registry of the sessions this daemon holds, and the operations on them."""

    log = Logger()

    def __init__(self, reactor: Any, config: Config, store: Any, runtime: Any = None) -> None:
        self._reactor = reactor
        self.config = config
        self._store = store
        self._runtime = runtime or PtyRuntime(reactor)
        self.harnesses = HarnessRegistry(config)
        self.redactor = Redactor()
        self._sessions: dict[str, Session] = {}
        # id -> (when it finished, session), oldest first
        self._finished: OrderedDict[str, tuple[float, Session]] = OrderedDict()
        self._finished_bytes = 0
        # Failed launches whose row update is not committed yet: answered from here meanwhile.
        self._settling: dict[str, SessionRecord] = {}
        self._ladders: dict[str, KillLadder] = {}
        self._paused_since: float | None = None
        self._paused_total = 0.0
        self.paused_sessions = 0
        store.writer.pressure_listeners.append(self._pressure)

    # reads

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def history(self, session_id: str) -> Session | None:
        """A live session, or one finished moments ago: the one whose recent events are in memory."""
        self._forget_finished()
        kept = self._finished.get(session_id)
        return kept[1] if kept is not None else self._sessions.get(session_id)

    def record(self, session_id: str) -> SessionRecord | None:
        """The newest record of a session this daemon holds in memory, if any."""
        session = self._sessions.get(session_id)
        return session.record if session is not None else self._settling.get(session_id)

    def records(self) -> list[SessionRecord]:
        return [session.record for session in self._sessions.values()] + list(self._settling.values())

    def paused_ms(self) -> int:
        total = self._paused_total
        if self._paused_since is not None:
            total += self._reactor.seconds() - self._paused_since
        return int(total * 1000)

    # launch

    def launch(self, plan: LaunchPlan) -> SessionRecord:
        """Insert the row and start the program; a program that cannot start is launch_failed."""
        now = timestamp()
        record = SessionRecord(
            id=str(uuid.uuid4()),
            project_root=plan.project_root,
            harness=plan.adapter.id,
            title=plan.title,
            status="running",
            created_at=now,
            updated_at=now,
            conversation_id=plan.conversation_id,
            cwd=plan.cwd,
            rows=plan.rows,
            cols=plan.cols,
        )
        self._store.insert_session(record)
        try:
            spec = self._spec(plan)
            session = Session(self._reactor, record, self._store, self._released, self.redactor.payload)
            self._sessions[record.id] = session
            try:
                session.handle = self._runtime.start(spec, session.output, self._exited_callback(session))
            except BaseException:
                del self._sessions[record.id]
                raise
        except (LaunchFailed, OSError) as e:
            self._launch_failed(record, str(e))
        session.record = msgspec.structs.replace(session.record, pid=session.handle.pid)
        if self._store.writer.pressured:
            self._pause(session, True)
        self._store.update_session(record.id, pid=session.handle.pid)
        self.log.info(
            "session {sessionId} launched: harness={harness} pid={pid} cwd={cwd}",
            sessionId=record.id, harness=record.harness, pid=session.handle.pid, cwd=plan.cwd,
        )
        return session.record

    def _spec(self, plan: LaunchPlan) -> LaunchSpec:
        """Everything that can fail before exec is checked here, so no traceback lands on a pty."""
        if self._store.writer.state != "healthy":
            raise LaunchFailed(f"the event store cannot write: {self._store.writer.last_error}")
        if plan.launch_mode == "stream":
            raise LaunchFailed(
                f"harness `{plan.adapter.id}` does not support stream-mode launches; use launchMode `nonInteractive` instead"
            )
        try:
            argv = plan.adapter.argv(plan.prompt, plan.launch_mode, plan.model)
        except UnsafeModel as e:
            raise LaunchFailed(str(e)) from e
        env = self.config.child_environ
        if not os.path.isdir(plan.cwd):
            raise LaunchFailed(f"cwd is not a directory: {plan.cwd}")
        executable = plan.adapter.resolve_executable(env.get("PATH", os.defpath), plan.cwd)
        if executable is None:
            raise LaunchFailed(f"failed to spawn harness `{plan.adapter.executable}`")
        return LaunchSpec(executable, argv, plan.cwd, env, plan.rows, plan.cols)

    def _launch_failed(self, record: SessionRecord, message: str) -> NoReturn:
        """Answer at once, even while the store cannot write; the row follows when it can."""
        self.log.warn("session {sessionId} launch failed: {error}", sessionId=record.id, error=message)
        now = timestamp()
        self._settling[record.id] = msgspec.structs.replace(record, status="failed", updated_at=now)
        done = self._store.update_session(record.id, wait=True, status="failed", updated_at=now)
        done.addBoth(lambda _: self._settling.pop(record.id, None))
        raise ApiError(500, "launch_failed", message, {"sessionId": record.id})

    def _exited_callback(self, session: Session):
        def exited(code: int | None, signum: int | None) -> None:
            session.exited(code, signum)
            ladder = self._ladders.get(session.id)
            if ladder is not None:
                ladder.poke()
            elif session.handle is not None and session.handle.group_alive():
                # The program is gone but left members of its group behind: no strays.
                self.log.info("session {sessionId}: reaping its leftover process group", sessionId=session.id)
                self._climb(session)

        return exited

    def _released(self, session: Session) -> None:
        self._sessions.pop(session.id, None)
        if session.paused:
            session.paused = False
            self.paused_sessions -= 1
        self._finished[session.id] = (self._reactor.seconds(), session)
        self._finished_bytes += session.cache_bytes
        self._forget_finished()

    def _forget_finished(self) -> None:
        """Drop finished sessions from memory: the oldest first, beyond the count, bytes or age kept."""
        too_old = self._reactor.seconds() - FINISHED_SECONDS
        while self._finished:
            finished_at, oldest = next(iter(self._finished.values()))
            if len(self._finished) <= FINISHED_KEPT and self._finished_bytes <= FINISHED_BYTES \
                    and finished_at > too_old:
                return
            self._finished.popitem(last=False)
            self._finished_bytes -= oldest.cache_bytes

    # control

    def input(self, session: Session, data: bytes, payload: Any) -> None:
        assert session.handle is not None
        session.handle.write(data)
        session.append("input", payload)

    def resize(self, session: Session, rows: int, cols: int) -> None:
        assert session.handle is not None
        session.handle.resize(rows, cols)
        session.record = msgspec.structs.replace(session.record, rows=rows, cols=cols)
        self._store.update_session(session.id, rows=rows, cols=cols)
        session.append("resize", {"rows": rows, "cols": cols})

    def kill(self, session: Session) -> Deferred:
        """Mark killed and record it at once; the ladder then makes it true."""
        session.transition("killed", exit_code=None)
        session.append("kill", {"status": "killed"})
        self.log.info("session {sessionId} killed: starting the kill ladder", sessionId=session.id)
        return self._climb(session)

    def _climb(self, session: Session) -> Deferred:
        assert session.handle is not None
        ladder = KillLadder(self._reactor, session.handle, self.config.hup_grace, self.config.term_grace, session.id)
        self._ladders[session.id] = ladder
        done = ladder.start()
        done.addCallback(lambda _: self._ladders.pop(session.id, None))
        return done

    def shutdown(self) -> Deferred:
        """Kill every live session with the ladder; fires once every exit is stored."""
        waits = []
        for session in list(self._sessions.values()):
            if session.live:
                self.kill(session)
            waits.append(session.when_finished())
        waits += [ladder.done for ladder in self._ladders.values()]
        return DeferredList(waits, consumeErrors=True)

    # backpressure (contract A2)

    def _pause(self, session: Session, on: bool) -> None:
        if session.handle is None or session.paused == on:
            return
        session.paused = on
        if on:
            session.handle.pause()
            self.paused_sessions += 1
        else:
            session.handle.resume()
            self.paused_sessions -= 1

    def _pressure(self, on: bool) -> None:
        now = self._reactor.seconds()
        for session in list(self._sessions.values()):
            self._pause(session, on)
        if on:
            self._paused_since = now
        elif self._paused_since is not None:
            self._paused_total += now - self._paused_since
            self._paused_since = None


class SupervisorService(Service):
    """Stopping the service kills every live session and waits until their exits are stored."""

    name = "sessions"

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def startService(self) -> None:
        """Load the user's redaction rules; never run without them if they are broken."""
        try:
            self.supervisor.redactor = Redactor.from_home(self.supervisor.config.home)
        except ValueError as e:
            raise HomeRefused(f"coven: {e}") from e
        super().startService()

    def stopService(self) -> Deferred:
        super().stopService()
        return self.supervisor.shutdown()
