"""Event pages are joined from events encoded once, a chunk at a time (coven/api/events.py ``_page``).

These pin what the joining must never change: the page is exactly the events encoded one by
one and joined, ``hasMore`` is exact at and around chunk boundaries, the size cap can fall in
the middle of a chunk, and the first event that cannot fit is a 413. The history comes from a
stand-in store and the recent part from a stand-in session, as the supervisor would hold it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import coven.api.events as events_module
from coven.api.events import FIRST_DB_CHUNK, Events
from coven.errors import ApiError
from coven.wire import EventRecord, encode, page_piece

CHUNK = FIRST_DB_CHUNK


def make_events(count: int, size: int = 20) -> list[EventRecord]:
    return [
        EventRecord(seq, f"id-{seq}", "s", "output", json.dumps({"data": "x" * size}), "2026-05-09T06:43:00.000000000Z")
        for seq in range(1, count + 1)
    ]


class Session:
    """A live session whose memory holds the events from ``first_cached`` on."""

    finished = False

    def __init__(self, events: list[EventRecord], first_cached: int) -> None:
        self.events = [e for e in events if e.seq >= first_cached]
        self.pieces = [page_piece(e) for e in self.events]
        self.committed_seq = events[-1].seq if events else 0

    def reaches(self, after: int) -> bool:
        return after >= self.committed_seq if not self.events else after + 1 >= self.events[0].seq

    def recent(self, after: int) -> tuple[list[EventRecord], list[bytes]]:
        start = max(0, after + 1 - self.events[0].seq) if self.events else 0
        return self.events[start:], self.pieces[start:]


class Store:
    def __init__(self, events: list[EventRecord]) -> None:
        self.events = events
        self.reads: list[int] = []

    def read_events(self, session_id: str, after: int, limit: int | None) -> list[EventRecord]:
        self.reads.append(limit or 0)
        rows = [e for e in self.events if e.seq > after]
        return rows if limit is None else rows[:limit]


class Supervisor:
    def __init__(self, session: Session | None) -> None:
        self.session = session

    def history(self, session_id: str) -> Session | None:
        return self.session


class Context:
    def __init__(self, events: list[EventRecord], first_cached: int | None) -> None:
        self.store = Store(events)
        self.supervisor = Supervisor(None if first_cached is None else Session(events, first_cached))


def page(events: list[EventRecord], after: int, limit: int | None, first_cached: int | None = None) -> dict[str, Any]:
    body, empty = Events(Context(events, first_cached), None)._page("s", after, limit)
    parsed = json.loads(body)
    assert empty == (not parsed["events"])
    expected = b"[" + b",".join(encode(e) for e in events if e.seq in {x["seq"] for x in parsed["events"]}) + b"]"
    assert body.startswith(b'{"events":' + expected + b',"nextCursor":')
    return parsed


@pytest.mark.parametrize("first_cached", [None, 1, 40, 300])
@pytest.mark.parametrize("count", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 250])
@pytest.mark.parametrize("limit", [None, 1, CHUNK, CHUNK + 1, 100, 1000])
def test_a_page_is_every_event_after_the_cursor_up_to_the_limit(count: int, limit: int | None,
                                                               first_cached: int | None) -> None:
    events = make_events(count)
    for after in (0, 1, CHUNK, count):
        result = page(events, after, limit, first_cached)
        want = [e.seq for e in events if e.seq > after][:limit]
        assert [e["seq"] for e in result["events"]] == want
        assert result["hasMore"] == (limit is not None and count - after > limit)
        assert result["nextCursor"] == ({"afterSeq": want[-1]} if want else None)


def test_the_size_cap_can_end_a_page_inside_a_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    events = make_events(200, size=100)
    fits = CHUNK + 10  # the second chunk is cut after its tenth event
    cap = events_module._ENVELOPE + sum(len(encode(e)) + 1 for e in events[:fits])
    monkeypatch.setattr(events_module, "MAX_RESPONSE", cap)
    result = page(events, 0, 1000)
    assert [e["seq"] for e in result["events"]] == list(range(1, CHUNK + 11))
    assert result["hasMore"] is True
    assert result["nextCursor"] == {"afterSeq": CHUNK + 10}


def test_without_a_limit_what_does_not_fit_is_a_413(monkeypatch: pytest.MonkeyPatch) -> None:
    events = make_events(200, size=100)
    monkeypatch.setattr(events_module, "MAX_RESPONSE", 5000)
    with pytest.raises(ApiError) as raised:
        page(events, 0, None)
    assert raised.value.status == 413 and raised.value.code == "event_response_too_large"


def test_a_first_event_too_big_for_any_page_is_a_413(monkeypatch: pytest.MonkeyPatch) -> None:
    events = make_events(3, size=4000)
    monkeypatch.setattr(events_module, "MAX_RESPONSE", 3000)
    with pytest.raises(ApiError) as raised:
        page(events, 0, 10)
    assert raised.value.details == {"seq": 1, "eventId": "id-1"}


def test_history_is_read_only_as_far_as_the_page_can_reach() -> None:
    context = Context(make_events(5000), None)
    Events(context, None)._page("s", 0, 10)
    assert sum(context.store.reads) <= 11
