"""What goes over the wire: records, pages and the shared msgspec encoder.

Session and event records are snake_case (contract B §5.1, §7.1); page envelopes and
health are camelCase. Field order here is the order on the wire.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

encoder = msgspec.json.Encoder()
decode_any = msgspec.json.Decoder().decode


def encode(value: Any) -> bytes:
    return encoder.encode(value)


def timestamp(ns: int | None = None) -> str:
    """RFC 3339 UTC with exactly nine fractional digits: the width is load-bearing (B §5.3)."""
    if ns is None:
        ns = time.time_ns()
    seconds, nanos = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"


class SessionRecord(msgspec.Struct, kw_only=True):
    """The 16 reference keys, always present, then this daemon's additive ones (A13)."""

    id: str
    project_root: str
    harness: str
    title: str
    status: str
    exit_code: int | None = None
    archived_at: str | None = None
    created_at: str
    updated_at: str
    conversation_id: str | None = None
    familiar_id: str | None = None
    execution_binding: dict[str, Any] | None = None
    labels: list[str] = []
    visibility: str = "private"
    external: bool = False
    transcript_path: str | None = None
    cwd: str | UnsetType = UNSET
    pid: int | UnsetType = UNSET
    rows: int | UnsetType = UNSET
    cols: int | UnsetType = UNSET
    last_seq: int = 0


class EventRecord(msgspec.Struct):
    seq: int
    id: str
    session_id: str
    kind: str
    payload_json: str
    created_at: str


def page_piece(event: EventRecord) -> bytes:
    """An event as a page holds it: encoded once, after the comma that parts it from the one before.

    Pages are then one join of pieces (the first loses its comma), never a re-encoding.
    """
    return b"," + encoder.encode(event)


class Cursor(msgspec.Struct):
    afterSeq: int


class EventPage(msgspec.Struct):
    events: list[EventRecord]
    nextCursor: Cursor | None
    hasMore: bool


class SessionPage(msgspec.Struct):
    sessions: list[SessionRecord]
    next_cursor: str | None


class Accepted(msgspec.Struct):
    ok: bool = True
    accepted: bool = True


TERMINAL_STATUSES = frozenset({"completed", "failed", "killed", "orphaned"})
