"""One session: its record, its numbered events, its live followers, and its process.

Bytes from the pty are decoded incrementally (a character split across reads arrives whole,
invalid bytes become U+FFFD) and coalesced briefly into one ``output`` event. Every event
gets the next ``seq`` here, on the reactor thread, wakes followers at once and is queued for
the writer; followers never wait for the disk. Recent events stay in memory (at least until
they are committed), so reads of a live session rarely touch SQLite.
"""

from __future__ import annotations

import codecs
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from coven.redaction import redact_payload, settled
from coven.sessions import vtquery
from coven.sessions.runtime import PtyHandle, signal_name
from coven.wire import EventRecord, SessionRecord, page_piece, timestamp

COALESCE_BYTES = 64 * 1024
COALESCE_WINDOW = 0.004
QUIET_AFTER = 0.010
# A read this small is a program that paused (an echo, a prompt), not one streaming output.
SMALL_READ = 4096
# How long a tail that may begin a secret waits for the rest (it normally arrives with the next read).
UNSETTLED_WAIT = 0.020
CACHE_BYTES = 1024 * 1024
CACHE_EVENTS = 4096

_payload_encoder = msgspec.json.Encoder(order="sorted")

# status -> statuses it may move to (contract B §5.2)
TRANSITIONS = {
    "running": {"completed", "failed", "killed"},
    "completed": set(),
    "failed": set(),
    "killed": set(),
}


class InvalidTransition(Exception):
    pass


class Session:
    """A live session. The supervisor creates it, the runtime feeds it, routes read it."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        record: SessionRecord,
        store: Any,
        on_finished: Callable[[Session], None],
        redact: Callable[[Any], Any] = redact_payload,
    ) -> None:
        self._reactor = reactor
        self._redact = redact
        self.record = record
        self._store = store
        self._on_finished = on_finished
        self.handle: PtyHandle | None = None
        self.committed_seq = record.last_seq
        self.events: list[EventRecord] = []
        self.pieces: list[bytes] = []  # events[i] as page_piece encodes it
        self.cache_bytes = 0
        self._waiters: list[Deferred] = []
        self._exit_waiters: list[Deferred] = []
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._flush_call: Any = None
        self._last_flush = float("-inf")
        self._unsettled = ""  # decoded output that may be the start of a secret, held back
        self._unsettled_call: Any = None
        self._stored_last = ""  # the last character of output stored, for word boundaries
        self.finished = False
        self.paused = False

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def last_seq(self) -> int:
        return self.record.last_seq

    @property
    def live(self) -> bool:
        """Accepts input, resize and kill: running, and its process not yet gone."""
        return self.record.status == "running" and self.handle is not None and not self.finished

    # state

    def transition(self, status: str, **fields: Any) -> None:
        """Move to ``status`` if the state machine allows it, and persist the change."""
        if status not in TRANSITIONS[self.record.status]:
            raise InvalidTransition(f"{self.record.status} -> {status}")
        now = timestamp()
        self.record = msgspec.structs.replace(self.record, status=status, updated_at=now, **fields)
        self._store.update_session(self.id, status=status, updated_at=now, **fields)

    # events

    def append(self, kind: str, payload: Any) -> EventRecord:
        """Number, cache, publish and queue one event."""
        self.record.last_seq += 1
        event = EventRecord(
            seq=self.record.last_seq,
            id=str(uuid.uuid4()),
            session_id=self.id,
            kind=kind,
            payload_json=_payload_encoder.encode(self._redact(payload)).decode(),
            created_at=timestamp(),
        )
        piece = page_piece(event)
        self.events.append(event)
        self.pieces.append(piece)
        self.cache_bytes += len(piece)
        done = self._store.append_events([event], wait=True)
        # A write the store refuses or gives up on is logged by the writer; the event stays cached.
        done.addCallbacks(self._committed, lambda _: None, callbackArgs=(event.seq,))
        self._wake()
        return event

    def _committed(self, _: Any, seq: int) -> None:
        self.committed_seq = max(self.committed_seq, seq)
        self._trim()

    def _trim(self) -> None:
        """Forget the oldest committed events once the cache is over budget."""
        drop = 0
        events = self.events
        while (
            drop < len(events)
            and (self.cache_bytes > CACHE_BYTES or len(events) - drop > CACHE_EVENTS)
            and events[drop].seq <= self.committed_seq
        ):
            self.cache_bytes -= len(self.pieces[drop])
            drop += 1
        if drop:
            del events[:drop]
            del self.pieces[:drop]

    def reaches(self, after_seq: int) -> bool:
        """Memory holds every event after ``after_seq``: nothing between it and the cache is missing."""
        if not self.events:
            return after_seq >= self.committed_seq
        return after_seq + 1 >= self.events[0].seq

    def recent(self, after_seq: int) -> tuple[list[EventRecord], list[bytes]]:
        """The events in memory with seq > after_seq, and their page pieces."""
        start = max(0, after_seq + 1 - self.events[0].seq) if self.events else 0
        return self.events[start:], self.pieces[start:]

    def wait(self) -> Deferred:
        """A Deferred that fires at the next event (or at once if the session is done)."""
        if self.finished:
            d: Deferred = Deferred()
            d.callback(None)
            return d
        d = Deferred(lambda d: self._waiters.remove(d))
        self._waiters.append(d)
        return d

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def when_finished(self) -> Deferred:
        """Each caller gets its own Deferred, fired once the exit is committed (or the store gave up on it)."""
        d: Deferred = Deferred()
        if self.finished and self.committed_seq >= self.last_seq:
            d.callback(None)
        else:
            self._exit_waiters.append(d)
        return d

    # the runtime's callbacks

    def output(self, data: bytes) -> None:
        data, replies = vtquery.answer(data)
        if replies and self.handle is not None:
            self.handle.write(replies)
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= COALESCE_BYTES:
            self.flush_output()
        elif self._flush_call is None:
            now = self._reactor.seconds()
            streaming = len(data) >= SMALL_READ and now - self._last_flush <= QUIET_AFTER
            delay = COALESCE_WINDOW if streaming else 0
            self._flush_call = self._reactor.callLater(delay, self.flush_output)

    def flush_output(self, final: bool = False, release: bool = False) -> None:
        """Turn what the pty gave into an ``output`` event.

        A tail that may be the start of a secret (``redaction.settled``) is held back until
        more output settles it, for at most UNSETTLED_WAIT of quiet, or until the exit;
        ``release`` lets it go as it stands.
        """
        for call in (self._flush_call, self._unsettled_call):
            if call is not None and call.active():
                call.cancel()
        self._flush_call = self._unsettled_call = None
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        self._last_flush = self._reactor.seconds()
        text = self._unsettled + self._decoder.decode(data, final)
        keep = len(text) if final or release else settled(text, self._stored_last)
        self._unsettled = text[keep:]
        if self._unsettled:
            self._unsettled_call = self._reactor.callLater(UNSETTLED_WAIT, self._release_unsettled)
        if keep:
            self._stored_last = text[keep - 1]
            self.append("output", {"data": text[:keep]})

    def _release_unsettled(self) -> None:
        """Quiet for long enough: store the held tail, unless reading is paused (more may be queued)."""
        if self.paused:
            self._unsettled_call = self._reactor.callLater(UNSETTLED_WAIT, self._release_unsettled)
        else:
            self._unsettled_call = None
            self.flush_output(release=True)

    def exited(self, code: int | None, signum: int | None) -> None:
        """The process is gone and its pty drained: record the exit last, then let go."""
        self.flush_output(final=True)
        status = self.record.status
        if status == "running":
            status = "completed" if code == 0 else "failed"
            self.transition(status, exit_code=code)
        self.append("exit", {"exitCode": code, "status": status, "signal": signal_name(signum)})
        self.finished = True
        self.record = msgspec.structs.replace(self.record, pid=msgspec.UNSET)
        self._store.update_session(self.id, pid=None)
        self.log.info(
            "session {sessionId} exited: status={status} code={code} signal={signal}",
            sessionId=self.id, status=status, code=code, signal=signal_name(signum),
        )
        self._store.writer.flushed().addBoth(self._released)  # stored or not, the process is gone

    def _released(self, _: Any) -> None:
        self._on_finished(self)
        waiters, self._exit_waiters = self._exit_waiters, []
        for d in waiters:
            d.callback(None)
