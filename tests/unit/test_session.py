"""A session's event log on a fake clock: decoding, coalescing, numbering, exit, followers."""

import json

import pytest
from twisted.internet.task import Clock

from coven.sessions import session as session_module
from coven.sessions.session import InvalidTransition, Session
from coven.wire import SessionRecord, page_piece
from tests.unit.fakes import FakeHandle, FakeStore


def make_session(clock=None, store=None):
    clock = clock or Clock()
    store = store or FakeStore()
    released = []
    record = SessionRecord(
        id="s1", project_root="/p", harness="shell", title="t", status="running",
        created_at="2026-01-01T00:00:00.000000000Z", updated_at="2026-01-01T00:00:00.000000000Z",
    )
    session = Session(clock, record, store, released.append)
    session.handle = FakeHandle()
    return clock, store, session, released


def payloads(store, kind=None):
    return [json.loads(e.payload_json) for e in store.events if kind is None or e.kind == kind]


def test_multibyte_character_split_across_reads_arrives_whole():
    clock, store, session, _ = make_session()
    snowman = "☃".encode()
    session.output(b"a" + snowman[:1])
    clock.advance(0)
    session.output(snowman[1:] + b"b")
    clock.advance(1)
    assert "".join(p["data"] for p in payloads(store)) == "a☃b"
    assert all("\ufffd" not in p["data"] for p in payloads(store))


def test_invalid_bytes_become_replacement_characters():
    clock, store, session, _ = make_session()
    session.output(b"ok\xff\xfe!")
    clock.advance(1)
    assert payloads(store) == [{"data": "ok\ufffd\ufffd!"}]


def test_truncated_character_at_exit_is_flushed_as_replacement():
    clock, store, session, _ = make_session()
    session.output("é".encode()[:1])
    session.exited(0, None)
    assert payloads(store, "output") == [{"data": "\ufffd"}]


def test_large_reads_while_streaming_coalesce_into_one_event():
    clock, store, session, _ = make_session()
    block = b"x" * session_module.SMALL_READ
    session.output(block)  # quiet session: flushed at the next turn of the reactor
    clock.advance(0)
    for _ in range(3):
        session.output(block)  # streaming: held for the window
    assert store.events[-1].seq == 1
    clock.advance(session_module.COALESCE_WINDOW)
    assert [len(p["data"]) for p in payloads(store)] == [len(block), 3 * len(block)]


def test_small_reads_are_published_at_the_next_turn_even_while_busy():
    clock, store, session, _ = make_session()
    session.output(b"x" * session_module.SMALL_READ)
    clock.advance(0)
    session.output(b"typed")  # an echo right after output: no coalescing delay
    clock.advance(0)
    assert payloads(store)[-1] == {"data": "typed"}


def test_a_full_buffer_flushes_without_waiting():
    clock, store, session, _ = make_session()
    session.output(b"x" * session_module.COALESCE_BYTES)
    assert len(store.events) == 1
    assert len(payloads(store)[0]["data"]) == session_module.COALESCE_BYTES


def test_seq_is_dense_from_one_and_exit_is_last():
    clock, store, session, _ = make_session()
    session.output(b"hello")
    clock.advance(1)
    session.append("input", {"data": "x"})
    session.output(b"late output")
    session.exited(3, None)
    assert [e.seq for e in store.events] == [1, 2, 3, 4]
    assert [e.kind for e in store.events] == ["output", "input", "output", "exit"]
    assert payloads(store, "exit") == [{"exitCode": 3, "signal": None, "status": "failed"}]
    assert session.record.status == "failed" and session.record.exit_code == 3


def test_clean_exit_completes_and_releases_after_commit():
    clock, store, session, released = make_session()
    finished = session.when_finished()
    session.exited(0, None)
    assert session.record.status == "completed"
    assert released == [session]
    assert finished.called


def test_killed_session_stays_killed_and_reports_the_signal():
    clock, store, session, _ = make_session()
    session.transition("killed", exit_code=None)
    session.exited(None, 15)
    assert session.record.status == "killed"
    assert payloads(store, "exit") == [{"exitCode": None, "signal": "SIGTERM", "status": "killed"}]
    assert ("s1", {"status": "killed", "updated_at": session.record.updated_at, "exit_code": None}) in store.updates


def test_terminal_states_do_not_move():
    _, _, session, _ = make_session()
    session.transition("completed", exit_code=0)
    with pytest.raises(InvalidTransition):
        session.transition("killed")


def test_follower_is_woken_by_the_next_event_not_a_timer():
    clock, store, session, _ = make_session()
    waiting = session.wait()
    assert not waiting.called
    session.append("input", {"data": "x"})
    assert waiting.called


def test_cancelled_follower_is_forgotten():
    _, _, session, _ = make_session()
    waiting = session.wait()
    waiting.cancel()
    waiting.addErrback(lambda f: None)
    assert session._waiters == []


def test_cache_keeps_uncommitted_events_and_trims_committed_ones(monkeypatch):
    monkeypatch.setattr(session_module, "CACHE_EVENTS", 3)
    clock, store, session, _ = make_session()
    store.autocommit = False
    for i in range(5):
        session.append("input", {"data": str(i)})
    assert [e.seq for e in session.events] == [1, 2, 3, 4, 5]  # nothing committed, nothing dropped
    store.commit()
    assert [e.seq for e in session.events] == [3, 4, 5]
    assert not session.reaches(1)  # memory no longer reaches back: read the store
    assert session.reaches(2) and session.reaches(5)
    events, pieces = session.recent(3)
    assert [e.seq for e in events] == [4, 5]
    assert pieces == [page_piece(e) for e in events]  # each encoded once, as pages join them
    assert session.recent(5) == ([], [])


def test_secrets_are_redacted_before_storage():
    clock, store, session, _ = make_session()
    session.append("input", {"data": "export OPENAI_API_KEY=sk-abcdefghijklmnopqrstuvwx\r"})
    assert "sk-abcdefghijklmnopqrstuvwx" not in store.events[0].payload_json


def test_terminal_queries_are_answered_and_kept_out_of_the_log():
    clock, store, session, _ = make_session()
    session.output(b"before\x1b[6nmiddle\x1b[cend\x1b[5n")
    clock.advance(1)
    assert payloads(store) == [{"data": "beforemiddleend"}]
    assert session.handle.written == [b"\x1b[1;1R\x1b[?62;c\x1b[0n"]
