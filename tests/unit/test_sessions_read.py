"""Session reads from the store: GET /sessions (B §6.1) and GET /sessions/:id (B §6.2, §5.1).

Rows are seeded through the Store API and committed before the request, as a previous daemon
would have left them; the Supervisor holds no sessions.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import pytest_twisted

from coven.store.store import Store
from coven.wire import SessionRecord
from tests.conftest import MemoryClient, within

REFERENCE_KEYS = [
    "id", "project_root", "harness", "title", "status", "exit_code", "archived_at", "created_at", "updated_at",
    "conversation_id", "familiar_id", "execution_binding", "labels", "visibility", "external", "transcript_path",
]


def record(id_: str, created: int, **fields: Any) -> SessionRecord:
    stamp = f"2026-05-09T06:43:{created:02d}.123456789Z"
    values: dict[str, Any] = {
        "id": id_, "project_root": "/srv/project", "harness": "codex", "title": f"title {id_}",
        "status": "completed", "exit_code": 0, "created_at": stamp, "updated_at": stamp,
    }
    return SessionRecord(**{**values, **fields})


async def seed(store: Store, *records: SessionRecord) -> None:
    for each in records:
        store.insert_session(each)
    await within(store.writer.flushed())


def ids(sessions: list[dict[str, Any]]) -> list[str]:
    return [session["id"] for session in sessions]


def test_empty_store_lists_a_plain_empty_array(http: MemoryClient) -> None:
    response = http.get("/api/v1/sessions")
    assert (response.status, response.body) == (200, b"[]")


@pytest_twisted.ensureDeferred
async def test_plain_list_is_newest_first_and_hides_archived(http: MemoryClient, store: Store) -> None:
    await seed(
        store,
        record("a", 1),
        record("c", 3),
        record("b2", 2),
        record("b1", 2),
        record("old-archived", 4, archived_at="2026-05-10T00:00:00.000000000Z"),
    )
    listed = http.get("/api/v1/sessions?other=ignored").json()
    assert ids(listed) == ["c", "b2", "b1", "a"]
    assert http.get("/sessions").json() == listed


@pytest_twisted.ensureDeferred
async def test_record_shape_is_the_reference_shape(http: MemoryClient, store: Store) -> None:
    await seed(
        store,
        record("full", 5, status="killed", exit_code=None, conversation_id="conv-1", familiar_id="fam",
               execution_binding={"contract": "x"}, labels=["l1", "l2"], external=True,
               transcript_path="/t.jsonl", cwd="/srv/project/sub", rows=30, cols=100),
        record("bare", 6, status="running", exit_code=None),
    )
    bare = http.get("/api/v1/sessions/bare").json()
    assert list(bare)[:16] == REFERENCE_KEYS
    assert bare == {
        "id": "bare", "project_root": "/srv/project", "harness": "codex", "title": "title bare",
        "status": "running", "exit_code": None, "archived_at": None,
        "created_at": "2026-05-09T06:43:06.123456789Z", "updated_at": "2026-05-09T06:43:06.123456789Z",
        "conversation_id": None, "familiar_id": None, "execution_binding": None, "labels": [],
        "visibility": "private", "external": False, "transcript_path": None, "last_seq": 0,
    }
    full = http.get("/api/v1/sessions/full").json()
    assert list(full)[:16] == REFERENCE_KEYS
    assert (full["execution_binding"], full["labels"], full["external"]) == ({"contract": "x"}, ["l1", "l2"], True)
    assert (full["conversation_id"], full["familiar_id"], full["transcript_path"]) == ("conv-1", "fam", "/t.jsonl")
    assert (full["cwd"], full["rows"], full["cols"]) == ("/srv/project/sub", 30, 100)
    assert http.get("/api/v1/sessions").json() == [bare, full]


@pytest_twisted.ensureDeferred
async def test_archived_session_is_still_fetched_by_id(http: MemoryClient, store: Store) -> None:
    await seed(store, record("gone", 1, archived_at="2026-05-10T00:00:00.000000000Z"))
    assert http.get("/sessions/gone").json()["archived_at"] == "2026-05-10T00:00:00.000000000Z"


@pytest.mark.parametrize("raw_id", ["missing", "a%2Fb", "a/b", "100%", "%", "x/input", "", "%E2%9C%93", "..", "a?"])
def test_unknown_id_is_session_not_found_with_the_raw_id(http: MemoryClient, raw_id: str) -> None:
    response = http.get(f"/api/v1/sessions/{raw_id}")
    expected_id = raw_id.partition("?")[0]  # the query is split off before routing
    assert response.status == 404
    assert response.json() == {
        "error": {"code": "session_not_found", "message": "Session was not found.",
                  "details": {"sessionId": expected_id}},
    }


@pytest_twisted.ensureDeferred
async def test_ids_are_matched_raw_never_percent_decoded(http: MemoryClient, store: Store) -> None:
    await seed(store, record("a%2Fb", 1), record("a/b", 2), record("50%", 3))
    assert http.get("/api/v1/sessions/a%2Fb").json()["id"] == "a%2Fb"
    assert http.get("/api/v1/sessions/a/b").json()["id"] == "a/b"
    assert http.get("/sessions/50%").json()["id"] == "50%"


# pagination envelope


@pytest_twisted.ensureDeferred
async def test_pages_follow_next_cursor_to_the_end(http: MemoryClient, store: Store) -> None:
    await seed(store, *(record(f"s{n}", n) for n in range(5)))
    seen, cursor, pages = [], None, 0
    while True:
        target = "/api/v1/sessions?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = http.get(target).json()
        assert list(page) == ["sessions", "next_cursor"]
        seen += ids(page["sessions"])
        cursor, pages = page["next_cursor"], pages + 1
        if cursor is None:
            break
    assert (seen, pages) == (["s4", "s3", "s2", "s1", "s0"], 3)


@pytest_twisted.ensureDeferred
async def test_next_cursor_is_null_when_the_page_ends_exactly(http: MemoryClient, store: Store) -> None:
    await seed(store, record("x", 1), record("y", 2))
    page = http.get("/api/v1/sessions?limit=2").json()
    assert (ids(page["sessions"]), page["next_cursor"]) == (["y", "x"], None)


@pytest_twisted.ensureDeferred
async def test_cursor_is_unpadded_urlsafe_base64_of_the_last_row(http: MemoryClient, store: Store) -> None:
    await seed(store, record("p", 1), record("q", 2))
    cursor = http.get("/api/v1/sessions?limit=1").json()["next_cursor"]
    assert "=" not in cursor
    decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    assert decoded == {"created_at": "2026-05-09T06:43:02.123456789Z", "id": "q"}


@pytest_twisted.ensureDeferred
async def test_any_paging_parameter_switches_to_the_envelope(http: MemoryClient, store: Store) -> None:
    await seed(store, record("live", 1), record("archived", 2, archived_at="2026-05-10T00:00:00.000000000Z"))
    assert http.get("/sessions?includeArchived=false").json() == {
        "sessions": [http.get("/sessions/live").json()], "next_cursor": None,
    }
    assert ids(http.get("/sessions?includeArchived=true").json()["sessions"]) == ["archived", "live"]
    assert ids(http.get("/sessions?limit=1000").json()["sessions"]) == ["live"]


def test_default_page_is_one_hundred() -> None:
    from coven.api import sessions

    assert (sessions.DEFAULT_PAGE, sessions.MAX_PAGE) == (100, 1000)


@pytest.mark.parametrize("raw", ["0", "1001", "-1", "abc", "", "1.5", "%201", "+5", "1e2"])
def test_bad_limit(http: MemoryClient, raw: str) -> None:
    response = http.get(f"/api/v1/sessions?limit={raw}")
    assert response.status == 400
    assert response.json() == {"error": {
        "code": "invalid_request",
        "message": "Query parameter `limit` must be an integer between 1 and 1000.",
        "details": {"limit": raw},
    }}


@pytest.mark.parametrize("raw", ["True", "1", "yes", ""])
def test_bad_include_archived(http: MemoryClient, raw: str) -> None:
    response = http.get(f"/api/v1/sessions?includeArchived={raw}")
    error = response.json()["error"]
    assert (response.status, error["code"], error["details"]) == (400, "invalid_request", {"includeArchived": raw})


@pytest.mark.parametrize("raw", ["%%%", "not-base64!", "bm90IGpzb24", base64.urlsafe_b64encode(b'{"id":"x"}').decode(),
                                 "Zm9v=====", ""])
def test_bad_cursor(http: MemoryClient, raw: str) -> None:
    response = http.get(f"/api/v1/sessions?cursor={raw}")
    error = response.json()["error"]
    assert (response.status, error["code"], error["message"]) == (
        400, "invalid_request", "Query parameter `cursor` is invalid.")
    assert error["details"]["cursor"] == raw and error["details"]["detail"]
