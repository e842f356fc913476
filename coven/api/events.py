"""Event routes: pages by cursor, long-poll follow (``waitMs``), and the log view.

Pages are joined from events encoded once (live sessions keep theirs encoded in memory), so
the response size is known before it is built; a page never exceeds the 4 MiB response cap
(contract B §7.1), and an empty page can be held open until the session's next event arrives
(contract A3).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

from twisted.internet.defer import Deferred

from coven.api.resource import ApiRequest, Router
from coven.errors import ApiError, invalid_request
from coven.wire import EventRecord, decode_any, page_piece

MAX_RESPONSE = 4 * 1024 * 1024 - 1
MAX_LIMIT = 1000
MAX_WAIT_MS = 60000
DB_CHUNK = 512
FIRST_DB_CHUNK = 64
LOG_PREVIEW = 240
_DECIMAL = re.compile(r"-?[0-9]{1,20}\Z")
_ENVELOPE = len(b'{"events":[],"nextCursor":{"afterSeq":18446744073709551615},"hasMore":false}')
_HEAD_OPEN = b'{"events":['


def _integer(query: dict[str, str], key: str, message: str) -> int | None:
    """A signed 64-bit decimal integer, written plainly (no spaces, ``+`` or ``_``)."""
    raw = query.get(key)
    if raw is None:
        return None
    if not _DECIMAL.match(raw) or not -(2**63) <= int(raw) < 2**63:
        raise invalid_request(message, {key: raw})
    return int(raw)


class Events:
    def __init__(self, context: Any, sessions: Any) -> None:
        self._context = context
        self._sessions = sessions

    def register(self, router: Router) -> None:
        router.add("/events", GET=self.events)
        router.add("/sessions/(?P<session_id>.*)/events", GET=self.events)
        router.add("/sessions/(?P<session_id>.*)/log", GET=self.log)

    def events(self, request: ApiRequest, session_id: str | None = None) -> Any:
        query = request.query
        if session_id is None:
            session_id = query.get("sessionId")
            if session_id is None:
                raise invalid_request("sessionId query parameter is required.")
        after_seq = _integer(query, "afterSeq", "afterSeq must be an integer.")
        limit = _integer(query, "limit", "limit must be an integer.")
        wait_ms = _integer(query, "waitMs", "waitMs must be an integer between 0 and 60000.") or 0
        if not 0 <= wait_ms <= MAX_WAIT_MS:
            raise invalid_request("waitMs must be an integer between 0 and 60000.", {"waitMs": query["waitMs"]})
        self._sessions.record(session_id)  # 404 before anything else is looked up
        if limit is not None:
            limit = min(max(limit, 1), MAX_LIMIT)
        if after_seq is None:
            after_seq = self._resolve_event_id(session_id, query.get("afterEventId"))

        page, empty = self._page(session_id, after_seq, limit)
        session = self._context.supervisor.get(session_id)
        if not empty or wait_ms == 0 or session is None or session.finished:
            return 200, page
        waiting: Deferred = session.wait()
        waiting.addTimeout(wait_ms / 1000, self._context.reactor, onTimeoutCancel=lambda *_: None)
        return waiting.addCallback(lambda _: (200, self._page(session_id, after_seq, limit)[0]))

    def _resolve_event_id(self, session_id: str, event_id: str | None) -> int:
        if event_id is None:
            return 0
        session = self._context.supervisor.history(session_id)
        if session is not None:
            for event in session.events:
                if event.id == event_id:
                    return event.seq
        seq = self._context.store.event_seq(session_id, event_id)
        if seq is None:
            raise ApiError(
                404, "event_not_found", "No event with that id in this session.",
                {"sessionId": session_id, "afterEventId": event_id},
            )
        return seq

    def _iter(self, session_id: str, after: int,
              want: int | None = None) -> Iterator[tuple[list[EventRecord], list[bytes] | None]]:
        """Events in seq order, a list at a time: committed history from SQLite, the rest from
        memory, which also holds their page pieces (None for what SQLite gave).

        ``want`` bounds how many the caller can use; SQLite is read in growing chunks, so a
        page of a few huge events never fetches a thousand rows and a page of many small
        ones takes a handful of queries.
        """
        session = self._context.supervisor.history(session_id)
        store = self._context.store
        chunk_size = FIRST_DB_CHUNK
        while True:
            if session is None or not session.reaches(after):
                size = chunk_size if want is None else min(chunk_size, want)
                chunk = store.read_events(session_id, after, size)
                if chunk:
                    yield chunk, None
                    after = chunk[-1].seq
                    chunk_size = min(chunk_size * 2, DB_CHUNK)
                    if want is not None:
                        want -= len(chunk)
                        if want <= 0:
                            return
                    continue
                if session is None:
                    return
            events, pieces = session.recent(after)
            if events:
                yield (events, pieces) if want is None else (events[:want], pieces[:want])
            return

    def _page(self, session_id: str, after: int, limit: int | None) -> tuple[bytes, bool]:
        """Join the events' page pieces once, as many as ``limit`` and the size cap allow."""
        parts = [_HEAD_OPEN]
        room = MAX_RESPONSE - _ENVELOPE + 1  # each piece brings its comma; the first one's is dropped
        count = 0
        last = after
        more = False
        # One event past the page is fetched, so ``hasMore`` is exact (the limit+1 peek).
        for events, pieces in self._iter(session_id, after, None if limit is None else limit + 1):
            if pieces is None:
                pieces = [page_piece(event) for event in events]
            take = len(pieces) if limit is None else min(len(pieces), limit - count)
            fit, used = _fitting(pieces[:take], room)
            if fit:
                parts += pieces[:fit]
                room -= used
                count += fit
                last = events[fit - 1].seq
            if fit < take and (limit is None or not count):
                event = events[fit]
                details: dict[str, Any] = {"seq": event.seq}
                if len(event.id) <= 512:
                    details["eventId"] = event.id
                raise ApiError(413, "event_response_too_large",
                               "The next event does not fit in one response; page with `limit`.", details)
            if fit < len(pieces):
                more = True
                break
        if count:
            parts[1] = parts[1][1:]
            parts.append(b'],"nextCursor":{"afterSeq":%d},"hasMore":%s}' % (last, b"true" if more else b"false"))
        else:
            parts.append(b'],"nextCursor":null,"hasMore":false}')
        return b"".join(parts), not count

    def log(self, request: ApiRequest, session_id: str) -> tuple[int, Any]:
        self._sessions.record(session_id)
        return 200, [_log_line(event) for events, _ in self._iter(session_id, 0) for event in events]


def _fitting(pieces: list[bytes], room: int) -> tuple[int, int]:
    """How many of ``pieces``, from the first, fit in ``room`` bytes, and the bytes they take."""
    total = sum(map(len, pieces))
    if total <= room:  # the usual page: no running sizes needed
        return len(pieces), total
    sizes = list(accumulate(map(len, pieces)))
    fit = bisect_right(sizes, room)
    return fit, sizes[fit - 1] if fit else 0


def _log_line(event: EventRecord) -> dict[str, str]:
    """One human line per event, as the reference's log view shows them (B §6.6)."""
    payload = decode_any(event.payload_json)
    preview = None
    if isinstance(payload, dict):
        for key in ("text", "message", "data"):
            if isinstance(payload.get(key), str):
                preview = payload[key]
                break
    if preview is None:
        preview = event.payload_json
    if len(preview) > LOG_PREVIEW:
        preview = preview[:LOG_PREVIEW] + "..."
    level, message = "info", f"{event.kind}: {preview}"
    if event.kind == "input":
        message = f"> {preview}"
    elif event.kind == "output":
        message = preview
    elif event.kind == "tool_call":
        level = "tool"
    elif event.kind == "error":
        level = "error"
    return {"ts": event.created_at, "level": level, "message": message}
