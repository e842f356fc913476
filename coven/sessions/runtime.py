"""The runtime seam: how a session's program is started and driven in a pseudo-terminal.

Everything above this module sees only ``PtyRuntime.start(spec, output, exited)`` and the
``PtyHandle`` it returns. A later runtime that keeps ptys alive across daemon restarts (a
holder process per session) replaces this module and nothing else.
"""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import struct
import termios
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import main, process
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

# After the child is reaped, how long a grandchild may keep the pty open before we close it.
DRAIN_GRACE = 0.5
# One wake-up drains the pty up to this much, so a flood costs a reactor pass per 64 KiB
# rather than per 4 KiB read.
READ_PER_WAKEUP = 64 * 1024


@dataclass(frozen=True)
class LaunchSpec:
    executable: str
    argv: Sequence[str]
    cwd: str
    env: Mapping[str, str] = field(default_factory=dict)
    rows: int = 24
    cols: int = 80


def set_window_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class PtyHandle:
    """A running program: write to it, resize it, signal its process group, pause reading."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        # Twisted drops transport.proto once the process has ended; the exit still flushes
        # output (and may meet backpressure) after that, so keep our own reference.
        self._protocol = transport.proto
        self.pid: int = transport.leader

    def write(self, data: bytes) -> None:
        self._transport.write(data)

    def resize(self, rows: int, cols: int) -> None:
        set_window_size(self._transport.fileno(), rows, cols)

    def signal_group(self, signum: int) -> bool:
        """Signal the whole process group; False when nobody is left in it."""
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def group_alive(self) -> bool:
        return self.signal_group(0)

    def pause(self) -> None:
        self._protocol.paused = True
        self._transport.pauseProducing()

    def resume(self) -> None:
        self._protocol.paused = False
        self._transport.resumeProducing()


class _PtyProtocol(ProcessProtocol):
    """Keeps ``outReceived`` trivial: an exception there would disconnect the pty."""

    def __init__(self, reactor: Any, output: Callable[[bytes], None], exited: Callable[[int | None, int | None], None]) -> None:
        self._reactor = reactor
        self._output = output
        self._exited = exited
        self._drain: Any = None
        self.paused = False

    def childDataReceived(self, fd: int, data: bytes) -> None:
        self._output(data)

    def processExited(self, reason: Failure) -> None:
        self._drain = self._reactor.callLater(DRAIN_GRACE, self._close)

    def _close(self) -> None:
        """A backgrounded grandchild can hold the pty open forever; stop waiting for it.

        While reading is paused for backpressure the unread output is still owed to the
        log, so the pty stays open until reading resumes.
        """
        if self.paused:
            self._drain = self._reactor.callLater(DRAIN_GRACE, self._close)
        else:
            self._drain = None
            self.transport.loseConnection()

    def processEnded(self, reason: Failure) -> None:
        if self._drain is not None:
            self._drain.cancel()
            self._drain = None
        self._exited(getattr(reason.value, "exitCode", None), getattr(reason.value, "signal", None))


class _SpawnedPty(process.PTYProcess):
    """Twisted's PTY process, started with ``posix_spawn`` and read in larger gulps.

    Twisted forks the whole daemon and runs Python in the child before exec, which costs
    milliseconds that grow with the daemon's size, and a child that cannot exec dies with a
    traceback on the pty. ``posix_spawn`` runs no Python in the child and reports a failed
    exec as an OSError here, before the launch is accepted. (This overrides Twisted's private
    ``_fork``; tests/integration pin the behaviour it must keep.)
    """

    def _fork(self, path: str, uid: Any, gid: Any, executable: str, args: list[str],
              environment: dict[str, str], masterfd: int, slavefd: int) -> None:
        terminal = os.ttyname(slavefd)
        # setsid runs before the file actions, so opening the terminal as fd 0 makes it the
        # session's controlling terminal.
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, terminal, os.O_RDWR, 0),
            (os.POSIX_SPAWN_DUP2, 0, 1),
            (os.POSIX_SPAWN_DUP2, 0, 2),
        ]
        ignored = [s for s in signal.valid_signals() if signal.getsignal(s) == signal.SIG_IGN]
        here = os.open(".", os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.chdir(path)  # posix_spawn has no chdir action before Python 3.13's
            self.pid = os.posix_spawn(
                executable, args, environment, file_actions=actions, setsid=True,
                setsigdef=ignored, setsigmask=(),
            )
        finally:
            os.fchdir(here)
            os.close(here)
        # Twisted sets pid to None once it reaps the child, which it does at once if the child
        # is already gone when registered; the launch answer and the kill ladder still need it.
        self.leader: int = self.pid
        self.status = -1

    def doRead(self) -> Any:
        chunks: list[bytes] = []
        size = 0
        result = None
        while size < READ_PER_WAKEUP:
            try:
                data = os.read(self.fd, READ_PER_WAKEUP - size)
            except BlockingIOError:
                break
            except OSError:  # EIO: every holder of the terminal has closed it
                result = main.CONNECTION_LOST
                break
            if not data:
                result = main.CONNECTION_DONE
                break
            chunks.append(data)
            size += len(data)
        if chunks:
            self.proto.childDataReceived(1, b"".join(chunks))
        return result


class PtyRuntime:
    """Starts programs with Twisted's PTY process support, sized before they run."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def start(
        self,
        spec: LaunchSpec,
        output: Callable[[bytes], None],
        exited: Callable[[int | None, int | None], None],
    ) -> PtyHandle:
        """Spawn; the child leads its own session and process group with the pty as its terminal."""
        master, slave = pty.openpty()
        try:
            set_window_size(master, spec.rows, spec.cols)
            transport = _SpawnedPty(
                self._reactor,
                spec.executable,
                list(spec.argv),
                dict(spec.env),
                spec.cwd,
                _PtyProtocol(self._reactor, output, exited),
                usePTY=(master, slave, os.ttyname(slave)),
            )
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        return PtyHandle(transport)


def signal_name(signum: int | None) -> str | None:
    if signum is None:
        return None
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"
