"""Session routes: list, fetch, launch, input, resize, kill (contract B §6, A5, A8, A9, A11)."""

from __future__ import annotations

import errno
from typing import Any

import msgspec

from coven.api.resource import ApiRequest, Router
from coven.errors import ApiError, invalid_request, session_not_found, session_not_live
from coven.sessions.launch import dimension, parse_launch, reject_binding
from coven.store.store import BadCursor, SessionCursor, decode_cursor, encode_cursor
from coven.wire import Accepted, SessionPage, SessionRecord

MAX_PAGE = 1000
DEFAULT_PAGE = 100
# An input event must fit the event writer's per-event budget (contract B §6.4 step 6).
MAX_INPUT_EVENT = 2 * 1024 * 1024
EVENT_OVERHEAD = 512


def _sort_key(record: SessionRecord) -> tuple[str, str]:
    return record.created_at, record.id


class Sessions:
    """Reads answer from the supervisor's memory first, then from committed rows."""

    def __init__(self, daemon: Any) -> None:
        self._daemon = daemon

    def register(self, router: Router) -> None:
        router.add("/sessions", GET=self.list, POST=self.launch)
        router.add("/sessions/(?P<session_id>.*)/input", POST=self.input)
        router.add("/sessions/(?P<session_id>.*)/kill", POST=self.kill)
        router.add("/sessions/(?P<session_id>.*)/resize", POST=self.resize)
        router.add("/sessions/(?P<session_id>.*)", GET=self.get)

    def record(self, session_id: str) -> SessionRecord:
        record = self._daemon.supervisor.record(session_id) or self._daemon.store.get_session(session_id)
        if record is None:
            raise session_not_found(session_id)
        return record

    def get(self, request: ApiRequest, session_id: str) -> tuple[int, Any]:
        return 200, self.record(session_id)

    def live(self, session_id: str) -> Any:
        """The session if it takes input: 404 when unknown, 409 when not live."""
        self.record(session_id)
        session = self._daemon.supervisor.get(session_id)
        if session is None or not session.live:
            raise session_not_live(session_id)
        return session

    def launch(self, request: ApiRequest) -> Any:
        supervisor = self._daemon.supervisor
        try:
            plan = parse_launch(request.json(), supervisor.harnesses)
        except OSError as e:  # the daemon is out of descriptors or memory: nothing was created
            raise ApiError(503, "runtime_unavailable", f"The daemon cannot launch now: {e.strerror}; retry later.",
                           {"errno": errno.errorcode.get(e.errno or 0, str(e.errno))}) from e
        return 201, supervisor.launch(plan)

    def input(self, request: ApiRequest, session_id: str) -> tuple[int, Any]:
        session = self.live(session_id)
        body = request.json(sessionId=session_id)
        reject_binding(body)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, str):
            raise invalid_request("input payload requires string field `data`", {"sessionId": session_id})
        if len(request.body) + EVENT_OVERHEAD > MAX_INPUT_EVENT:
            raise ApiError(413, "input_too_large", "Input is larger than one event may be.", {"sessionId": session_id})
        self._daemon.supervisor.input(session, data.encode(), body)
        return 202, Accepted()

    def resize(self, request: ApiRequest, session_id: str) -> tuple[int, Any]:
        session = self.live(session_id)
        body = request.json(sessionId=session_id)
        rows, cols = dimension(body, "rows"), dimension(body, "cols")
        self._daemon.supervisor.resize(session, rows, cols)
        return 202, Accepted()

    def kill(self, request: ApiRequest, session_id: str) -> tuple[int, Any]:
        record = self.record(session_id)
        try:
            reject_binding(msgspec.json.decode(request.body) if request.body.strip() else {})
        except msgspec.DecodeError:
            pass  # the reference ignores a malformed kill body
        if record.status == "running" and record.external:
            raise ApiError(422, "external_session_not_killable", "External sessions cannot be killed.",
                           {"sessionId": session_id})
        self._daemon.supervisor.kill(self.live(session_id))
        return 202, Accepted()

    def list(self, request: ApiRequest) -> tuple[int, Any]:
        query = request.query
        paged = any(key in query for key in ("limit", "cursor", "includeArchived"))
        if not paged:
            return 200, self._page(None, None, False)
        limit = _limit(query.get("limit"))
        include_archived = _boolean(query.get("includeArchived"))
        after = None
        if "cursor" in query:
            try:
                after = decode_cursor(query["cursor"])
            except BadCursor as e:
                raise invalid_request(
                    "Query parameter `cursor` is invalid.", {"cursor": query["cursor"], "detail": str(e)}
                ) from e
        records = self._page(limit + 1, after, include_archived)
        more = len(records) > limit
        records = records[:limit]
        return 200, SessionPage(records, encode_cursor(records[-1]) if more else None)

    def _page(self, limit: int | None, after: SessionCursor | None, include_archived: bool) -> list[SessionRecord]:
        """Committed rows overlaid with the supervisor's newer, possibly uncommitted, records."""
        merged = {r.id: r for r in self._daemon.store.list_sessions(limit, after, include_archived)}
        for record in self._daemon.supervisor.records():
            if after is not None and _sort_key(record) >= (after.created_at, after.id):
                continue
            if record.archived_at is not None and not include_archived:
                continue
            merged[record.id] = record
        records = sorted(merged.values(), key=_sort_key, reverse=True)
        return records if limit is None else records[:limit]


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE
    if raw.isdigit() and 1 <= int(raw) <= MAX_PAGE:
        return int(raw)
    raise invalid_request("Query parameter `limit` must be an integer between 1 and 1000.", {"limit": raw})


def _boolean(raw: str | None) -> bool:
    if raw is None:
        return False
    if raw in ("true", "false"):
        return raw == "true"
    raise invalid_request("Query parameter `includeArchived` must be `true` or `false`.", {"includeArchived": raw})
