"""Hostile-conditions fixtures: a fuzz bed in memory, snapshots of the store, process checks.

The in-memory bed is the real CovenSite over a real Store (writer thread, SQLite in a tmp
dir) and a real Supervisor whose runtime is fake: launches that pass validation create
sessions whose "process" only records what it is sent, so fuzzed launches, input, resize and
kill bodies are cheap, deterministic and start nothing.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from tests.conftest import MemoryConnection
from tests.daemon import Daemon, Response, parse_response
from tests.hostile.strategies import resolve_ids

ROOT = Path(__file__).resolve().parent.parent.parent
SHELL_MANIFEST = ROOT / "adapters" / "shell.json"
RESPONSE_TIMEOUT = 10.0


# checks shared by every hostile test


def check_response(response: Response, allow_500: tuple[str, ...] = (), head: bool = False) -> Any:
    """JSON with an exact Content-Length, and every failure in the envelope; never a bare 500.

    ``head``: the answer to a HEAD request, which has the headers but no body to check.
    """
    assert response.header("Content-Type") == "application/json", response.raw[:300]
    assert len(response.header_values("Content-Length")) == 1
    if head:
        assert response.status < 500, response.raw[:300]
        return None
    body = json.loads(response.body) if response.body else None
    if response.status >= 400:
        assert isinstance(body, dict), response.raw[:300]
        error = body.get("error")
        assert isinstance(error, dict) and isinstance(error.get("code"), str), body
        assert isinstance(error.get("message"), str), body
        assert set(error) <= {"code", "message", "details"}, body
        assert isinstance(error.get("details", {}), dict), body
        if response.status >= 500:
            assert error["code"] in allow_500, f"{response.status} {body}"
    return body


def parse_responses(data: bytes, head: bool = False) -> list[Response]:
    """Every response in ``data``, each strictly framed; ``head``: the first answers a HEAD."""
    responses: list[Response] = []
    while data:
        # An HTTP/1.0 request is answered in HTTP/1.0; the framing rules are the same.
        framed = b"HTTP/1.1 " + data[9:] if data.startswith(b"HTTP/1.0 ") else data
        response = parse_response(framed, head=head and not responses)
        rest = data[len(response.raw):]
        if head and not responses and rest and not rest.startswith(b"HTTP/"):
            # A request line too broken to parse is not known to be a HEAD: its 400 has a body.
            response = parse_response(framed)
            assert response.status == 400, response.raw
        responses.append(response)
        data = data[len(response.raw):]
    return responses


def envelope_code(response: Response) -> str | None:
    if response.status < 400:
        return None
    return json.loads(response.body)["error"]["code"]


def outcome(response: Response) -> str:
    """``status code: message`` for tallies of what a fuzz run provoked."""
    if response.status < 400:
        return str(response.status)
    error = json.loads(response.body)["error"]
    return f"{response.status} {error['code']}: {error['message'][:50]}"


def snapshot_db(path: Path | str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every session row and every event row, as committed, read through a separate connection."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        sessions = conn.execute("SELECT * FROM sessions ORDER BY id").fetchall()
        events = conn.execute("SELECT * FROM events ORDER BY session_id, seq").fetchall()
    finally:
        conn.close()
    return sessions, events


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def open_fds(pid: int) -> list[str]:
    found = []
    for entry in os.listdir(f"/proc/{pid}/fd"):
        try:
            found.append(os.readlink(f"/proc/{pid}/fd/{entry}"))
        except OSError:
            pass
    return found


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` that are still in the process table (zombies included)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def shell_daemon(make_daemon: Callable[..., Daemon], **kwargs: Any) -> Daemon:
    """A real daemon that knows the `shell` adapter, with short kill graces."""
    env = {"COVEN_HARNESS_ADAPTER_MANIFEST": str(SHELL_MANIFEST), **kwargs.pop("env", {})}
    args = ("--hup-grace", "0.3", "--term-grace", "0.7", *kwargs.pop("args", ()))
    return make_daemon(args=args, env=env, **kwargs)


def launch_body(project: Path | str, prompt: str, **fields: Any) -> dict[str, Any]:
    return {"projectRoot": str(project), "harness": "shell", "prompt": prompt, **fields}


# the in-memory fuzz bed


class ThreadedClock(Clock):
    """A fake clock that also takes ``callFromThread`` calls, run when the test pumps.

    The store's writer thread reports commits through ``callFromThread``; pumping runs those
    reports on the test's thread, so a fuzz example is synchronous from end to end.
    """

    def __init__(self) -> None:
        super().__init__()
        self._from_threads: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]]] = queue.Queue()

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._from_threads.put((lambda: f(*args, **kwargs), ()))

    def pump(self, wait: float = 0.0) -> bool:
        """Run what threads handed over (waiting up to ``wait`` for the first); True if any ran."""
        ran = False
        try:
            call, _ = self._from_threads.get(timeout=wait) if wait else self._from_threads.get_nowait()
        except queue.Empty:
            return False
        while True:
            call()
            ran = True
            try:
                call, _ = self._from_threads.get_nowait()
            except queue.Empty:
                break
        self.advance(0)
        return ran

    def settle(self, d: Deferred, timeout: float = RESPONSE_TIMEOUT, what: str = "a Deferred") -> Any:
        """Pump (and let fake time pass) until ``d`` fires; return its result or raise its failure."""
        results: list[Any] = []
        d.addBoth(results.append)
        deadline = time.monotonic() + timeout
        while not results:
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            if not self.pump(wait=0.01):
                self.advance(0.01)
        result = results[0]
        if isinstance(result, Failure):
            result.raiseException()
        return result


class FuzzHandle:
    """A process that records what it is sent and dies on the first fatal signal."""

    def __init__(self, clock: Clock, pid: int, on_death: Callable[[int], None]) -> None:
        self._clock = clock
        self.pid = pid
        self.alive = True
        self.written: list[bytes] = []
        self.sizes: list[tuple[int, int]] = []
        self.signals: list[int] = []
        self._on_death = on_death

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def resize(self, rows: int, cols: int) -> None:
        self.sizes.append((rows, cols))

    def signal_group(self, signum: int) -> bool:
        if not self.alive:
            return False
        if signum:
            self.signals.append(signum)
            self.alive = False
            self._clock.callLater(0, self._on_death, signum)
        return True

    def group_alive(self) -> bool:
        return self.alive

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass

    def state(self) -> tuple[Any, ...]:
        return len(self.written), len(self.sizes), len(self.signals), self.alive


class FuzzRuntime:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.handles: list[FuzzHandle] = []
        self._next_pid = 900000

    def start(self, spec: Any, output: Callable[[bytes], None], exited: Callable[[Any, Any], None]) -> FuzzHandle:
        self._next_pid += 1
        handle = FuzzHandle(self._clock, self._next_pid, lambda signum: exited(None, signum))
        self.handles.append(handle)
        return handle


class FuzzBed:
    """The real site, store and supervisor on one fake clock; a baseline to compare against."""

    def __init__(self, clock: ThreadedClock, site: Any, store: Any, supervisor: Any, project: Path,
                 finished_id: str) -> None:
        self.clock = clock
        self.site = site
        self.store = store
        self.supervisor = supervisor
        self.project = project
        self.finished_id = finished_id
        self.valid_launch = {"projectRoot": str(project), "harness": "fuzz", "prompt": "hello"}
        self.examples = 0
        self.rejected = 0
        self.statuses: collections.Counter[str] = collections.Counter()

    def ids(self) -> dict[str, str]:
        live = [s.id for s in self.live() if s.live]
        return {"@LIVE0@": live[0], "@LIVE1@": live[1], "@DONE@": self.finished_id, "@UNKNOWN@": "no-such-session"}

    def live(self) -> list[Any]:
        return [s for s in (self.supervisor.get(r.id) for r in self.supervisor.records()) if s is not None]

    def ensure_live(self, count: int = 2) -> None:
        from coven.sessions.launch import parse_launch

        while len([s for s in self.live() if s.live]) < count:
            plan = parse_launch(self.valid_launch, self.supervisor.harnesses)
            record = self.supervisor.launch(plan)
            self.supervisor.get(record.id).append("output", {"data": "seed output"})
        self.flush()

    def flush(self) -> None:
        self.clock.settle(self.store.writer.flushed(), what="the writer")

    def quiet_state(self) -> Any:
        """The state once nothing more is going on: fake time passes until two looks agree.

        An accepted kill, for one, finishes over several turns (signal, exit, commit, release).
        """
        previous = self.state()
        for _ in range(50):
            self.clock.advance(1.0)
            current = self.state()
            if current == previous:
                return current
            previous = current
        raise AssertionError("the bed never went quiet")

    def state(self) -> Any:
        """What a rejected request must not change: committed rows and every live session."""
        self.flush()
        sessions = self.store.reader.execute("SELECT * FROM sessions ORDER BY id").fetchall()
        events = self.store.reader.execute("SELECT * FROM events ORDER BY session_id, seq").fetchall()
        live = sorted(
            (s.id, s.record.status, s.last_seq, len(s.events), len(s._waiters), s.handle.state())
            for s in self.live()
        )
        return sessions, events, live

    def exchange(self, raw: bytes) -> tuple[MemoryConnection, bool]:
        """Send ``raw`` and half-close; wait for the server to close. True if it held the request."""
        connection = MemoryConnection(self.site)
        connection.send(raw)
        connection.half_close()
        deadline = time.monotonic() + RESPONSE_TIMEOUT
        while not connection.closing:
            if not connection.written and any(s._waiters for s in self.live()):
                connection.drop()  # the client gives up on a long poll being held
                return connection, True
            assert time.monotonic() < deadline, f"no answer to {raw[:300]!r}; wrote {connection.written[:300]!r}"
            self.clock.pump(wait=0.005)
        return connection, False

    def ask(self, raw: bytes) -> list[Response]:
        """Just send and read the answers: no baseline, no flush (for a store that cannot write)."""
        connection, held = self.exchange(raw)
        try:
            return connection.responses()
        finally:
            if not held:
                connection.drop()

    def check(self, raw: bytes, head: bool = False) -> list[Response]:
        """One hostile request: framed JSON answers, no 500, no effect unless accepted."""
        self.ensure_live()
        before = self.quiet_state()
        connection, held = self.exchange(resolve_ids(raw, self.ids()))
        try:
            responses = parse_responses(connection.written, head)
        finally:
            if not held:
                connection.drop()
        for n, response in enumerate(responses):
            if head and n == 0:
                check_response(response, head=True)
                self.statuses[f"HEAD {response.status}"] += 1
                continue
            check_response(response, allow_500=("launch_failed",))
            self.statuses[outcome(response)] += 1
        if held:
            self.statuses["held"] += 1
        elif not responses:
            self.statuses["closed without answer"] += 1
        accepted = held or any(r.status < 300 or (r.body and envelope_code(r) == "launch_failed") for r in responses)
        after = self.quiet_state()
        if not accepted:
            self.rejected += 1
            assert after == before, f"a rejected request changed state: {raw[:500]!r} -> {responses}"
        self.examples += 1
        return responses


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "sub").mkdir(parents=True)
    (root / "file").write_text("not a directory")
    return root


@pytest.fixture
def fuzz_bed(tmp_path: Path, project: Path) -> Iterator[FuzzBed]:
    from coven.api.root import ApiContext, build_site
    from coven.config import Config
    from coven.sessions.supervisor import Supervisor
    from coven.store.store import Store
    from coven.wire import EventRecord, SessionRecord, timestamp

    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    manifest = tmp_path / "fuzz.json"
    manifest.write_text(json.dumps({"adapters": [{
        "id": "fuzz", "label": "Fuzz", "executable": "true", "install_hint": "coreutils",
        "interactive_prompt_prefix_args": [], "non_interactive_prompt_prefix_args": [],
    }]}))
    environ = {"PATH": os.environ.get("PATH", os.defpath), "COVEN_HARNESS_ADAPTER_MANIFEST": str(manifest)}
    config = Config.build(environ, home=str(home), hup_grace=0.05, term_grace=0.05)
    clock = ThreadedClock()
    store = Store(clock, config.database)
    store.open(timestamp())
    supervisor = Supervisor(clock, config, store, runtime=FuzzRuntime(clock))
    try:
        # A session an earlier daemon finished, with history to page through.
        now = timestamp()
        finished = SessionRecord(id="finished-1", project_root=str(project), harness="fuzz", title="done",
                                 status="completed", exit_code=0, created_at=now, updated_at=now)
        store.insert_session(finished)
        history = [("output", {"data": "hi\r\n"}), ("input", {"data": "x"}), ("output", {"data": "x" * 1000}),
                   ("exit", {"exitCode": 0, "status": "completed", "signal": None})]
        store.append_events([EventRecord(seq, f"ev-{seq}", finished.id, kind, json.dumps(payload), now)
                             for seq, (kind, payload) in enumerate(history, start=1)])
        site = build_site(ApiContext(config, store, supervisor, now, clock), reactor=clock)
        bed = FuzzBed(clock, site, store, supervisor, project, finished.id)
        bed.flush()
        yield bed
        clock.settle(supervisor.shutdown(), what="the supervisor to stop")
    finally:
        clock.settle(store.close(), what="the store to close")
    print(f"fuzz bed: {bed.examples} requests, {bed.rejected} rejected; {dict(bed.statuses.most_common())}")


# real daemons with a long-lived session


@pytest.fixture
def shell(make_daemon: Callable[..., Daemon]) -> Daemon:
    return shell_daemon(make_daemon)


class Mount:
    """A small tmpfs the test mounted; unmounted (lazily if still busy) at teardown."""

    def __init__(self, path: Path, size: str) -> None:
        self.path = path
        self.size = size
        self.mounted = False

    def mount(self) -> None:
        import subprocess

        self.path.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0700", "tmpfs", str(self.path)],
                                capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root and mount permission): {result.stderr.strip()}")
        self.mounted = True

    def unmount(self) -> None:
        import subprocess

        if self.mounted:
            result = subprocess.run(["umount", str(self.path)], capture_output=True, timeout=30)
            if result.returncode != 0:
                subprocess.run(["umount", "-l", str(self.path)], capture_output=True, timeout=30)
            self.mounted = False


@pytest.fixture
def small_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Mount]]:
    """``small_disk("8m")`` mounts a tmpfs of that size; every mount is undone at teardown."""
    mounts: list[Mount] = []
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")

    def make(size: str) -> Mount:
        base = Path("/tmp") / f"coven-disk-{os.getpid()}-{len(mounts)}"
        mount = Mount(base, size)
        mounts.append(mount)
        mount.mount()
        return mount

    yield make
    for mount in reversed(mounts):
        mount.unmount()
        try:
            mount.path.rmdir()
        except OSError:
            pass


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def first_error(response: Response) -> Any:
    return json.loads(response.body).get("error") if response.body else None

