"""Session routes: list, fetch, launch, input, resize, kill (contract B §6, A5, A8, A9, A11)."""

from __future__ import annotations

from typing import Any

from coven.api.resource import ApiRequest, Router
from coven.errors import invalid_request, session_not_found
from coven.store.store import BadCursor, SessionCursor, decode_cursor, encode_cursor
from coven.wire import SessionPage, SessionRecord

MAX_PAGE = 1000
DEFAULT_PAGE = 100


def _sort_key(record: SessionRecord) -> tuple[str, str]:
    return record.created_at, record.id


class Sessions:
    """Reads answer from the supervisor's memory first, then from committed rows."""

    def __init__(self, daemon: Any) -> None:
        self._daemon = daemon

    def register(self, router: Router) -> None:
        router.add("/sessions", GET=self.list)
        router.add("/sessions/(?P<session_id>.*)", GET=self.get)

    def record(self, session_id: str) -> SessionRecord:
        session = self._daemon.supervisor.get(session_id)
        if session is not None:
            return session.record
        record = self._daemon.store.get_session(session_id)
        if record is None:
            raise session_not_found(session_id)
        return record

    def get(self, request: ApiRequest, session_id: str) -> tuple[int, Any]:
        return 200, self.record(session_id)

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
