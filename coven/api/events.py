"""Event routes: pages by cursor, long-poll follow (``waitMs``), and the log view.

Pages are assembled from pre-encoded events so the response size is known exactly; a page
never exceeds the 4 MiB response cap (contract B §7.1), and an empty page can be held open
until the session's next event arrives (contract A3).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from twisted.internet.defer import Deferred

from coven.api.resource import ApiRequest, Router
from coven.errors import ApiError, invalid_request
from coven.wire import EventRecord, decode_any, encode, encoder

MAX_RESPONSE = 4 * 1024 * 1024 - 1
MAX_LIMIT = 1000
MAX_WAIT_MS = 60000
DB_CHUNK = 512
FIRST_DB_CHUNK = 64
ENCODE_BATCH = 64
LOG_PREVIEW = 240
_DECIMAL = re.compile(r"-?[0-9]{1,20}\Z")
_ENVELOPE = len(b'{"events":[],"nextCursor":{"afterSeq":18446744073709551615},"hasMore":false}')
_HEAD = b'{"events":'
# What a body of N events still needs after "[...]" at most; the cap counts it in from the start.
_TAIL_MAX = _ENVELOPE - len(_HEAD) - 1
_COMMA = ord(",")


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
        session = self._context.supervisor.get(session_id)
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

    def _iter(self, session_id: str, after: int, want: int | None = None) -> Iterator[list[EventRecord]]:
        """Events in seq order, a list at a time: committed history from SQLite, the rest from memory.

        ``want`` bounds how many the caller can use; SQLite is read in growing chunks, so a
        page of a few huge events never fetches a thousand rows and a page of many small
        ones takes a handful of queries.
        """
        session = self._context.supervisor.get(session_id)
        store = self._context.store
        chunk_size = FIRST_DB_CHUNK
        while True:
            cached = session.cached_after(after) if session is not None else None
            if cached is not None:
                if cached:
                    yield cached if want is None else cached[:want]
                return
            size = chunk_size if want is None else min(chunk_size, want)
            chunk = store.read_events(session_id, after, size)
            if not chunk:
                if session is not None:
                    rest = [e for e in session.events if e.seq > after]
                    if rest:
                        yield rest if want is None else rest[:want]
                return
            yield chunk
            after = chunk[-1].seq
            chunk_size = min(chunk_size * 2, DB_CHUNK)
            if want is not None:
                want -= len(chunk)
                if want <= 0:
                    return

    def _page(self, session_id: str, after: int, limit: int | None) -> tuple[bytes, bool]:
        """Encode a batch of events per call, straight into the body; go event by event only
        in the batch where the size cap falls."""
        body = bytearray(_HEAD)
        count = 0
        last = after
        more = False
        # One event past the page is fetched, so ``hasMore`` is exact (the limit+1 peek).
        for events in self._iter(session_id, after, None if limit is None else limit + 1):
            for start in range(0, len(events), ENCODE_BATCH):
                batch = events[start:start + ENCODE_BATCH]
                if limit is not None and count + len(batch) > limit:
                    batch = batch[:limit - count]
                    more = True
                if not batch:
                    break
                # After the first batch, a batch's "[" lands on the "]" before it and becomes
                # the comma between them: the body always ends with the closed array.
                at = len(body) - 1 if count else len(body)
                encoder.encode_into(batch, body, at)
                if count:
                    body[at] = _COMMA
                if len(body) + _TAIL_MAX <= MAX_RESPONSE:
                    count += len(batch)
                    last = batch[-1].seq
                    continue
                # The cap falls inside this batch: take it back, then add its events one at a time.
                del body[at:]
                if count:
                    body += b"]"
                for event in batch:
                    one = encode(event)
                    if len(body) + len(one) + 1 + (0 if count else 1) + _TAIL_MAX > MAX_RESPONSE:
                        if limit is None or not count:
                            details: dict[str, Any] = {"seq": event.seq}
                            if len(event.id) <= 512:
                                details["eventId"] = event.id
                            raise ApiError(413, "event_response_too_large",
                                           "The next event does not fit in one response; page with `limit`.",
                                           details)
                        break
                    if count:
                        body[-1] = _COMMA
                    else:
                        body += b"["
                    body += one
                    body += b"]"
                    count += 1
                    last = event.seq
                more = True
                break
            if more:
                break
        if not count:
            body += b"[]"
        cursor = b'{"afterSeq":%d}' % last if count else b"null"
        body += b',"nextCursor":%s,"hasMore":%s}' % (cursor, b"true" if more else b"false")
        return bytes(body), not count

    def log(self, request: ApiRequest, session_id: str) -> tuple[int, Any]:
        self._sessions.record(session_id)
        return 200, [_log_line(event) for events in self._iter(session_id, 0) for event in events]


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
