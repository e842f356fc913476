"""Discovery routes: api-version, health (A10, B §4.1), the catalog (B §4.2), /actions (B §4.4, A7)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from coven import __version__
from tests.conftest import MemoryClient

EVENT_WRITER_KEYS = [
    "state", "queuedEvents", "queuedBytes", "capacityBytes", "droppedOutputEvents", "droppedOutputBytes",
    "connectionOpens", "transactions", "committedEvents", "pausedSessions", "pausedMs",
]
STORAGE_KEYS = [
    "status", "databaseBytes", "walBytes", "oldestRetainedEventAt", "lastPruneAt", "pruneAgeSeconds",
    "lastCheckpointAt", "checkpointAgeSeconds", "writerBacklogEvents", "writerBacklogBytes", "freeDiskBytes",
    "maintenanceBlocked",
]
REFERENCE_GROUPS = ["travel", "scheduler", "hub", "executorDispatch", "sessionHandoff", "afs", "afsMount",
                    "afsCommit", "afsCommitDryRun", "executionBindingContracts", "requestAdoptionContracts"]
REFRESH = "coven.capabilities.refresh"


def test_api_version(http: MemoryClient) -> None:
    response = http.get("/api/v1/api-version")
    assert response.status == 200
    assert response.body == b'{"apiVersion":"v1","supportedApiVersions":["v1"]}'


def test_health_shape_and_order(http: MemoryClient, api: Any) -> None:
    health = http.get("/api/v1/health").json()
    assert list(health) == ["ok", "apiVersion", "covenVersion", "capabilities", "daemon", "eventWriter", "storage"]
    assert (health["ok"], health["apiVersion"], health["covenVersion"]) == (True, "coven.daemon.v1", __version__)
    assert health["daemon"] == {"pid": os.getpid(), "startedAt": api.started_at, "socket": str(api.config.socket)}
    assert list(health["eventWriter"]) == EVENT_WRITER_KEYS
    assert list(health["storage"]) == STORAGE_KEYS


def test_health_capabilities_seed_four_first_then_our_own_and_no_reference_groups(http: MemoryClient) -> None:
    capabilities = http.get("/health").json()["capabilities"]
    assert list(capabilities)[:4] == ["sessions", "events", "eventCursor", "structuredErrors"]
    assert capabilities == {
        "sessions": True,
        "events": True,
        "eventCursor": "sequence",
        "structuredErrors": True,
        "eventWait": True,
        "sessionResize": True,
    }
    assert not set(REFERENCE_GROUPS) & set(capabilities)


def test_health_event_writer_reports_the_real_writer(http: MemoryClient, api: Any) -> None:
    writer = api.store.writer
    block = http.get("/health").json()["eventWriter"]
    assert block == {
        "state": "healthy",
        "queuedEvents": writer.queued_events,
        "queuedBytes": writer.queued_bytes,
        "capacityBytes": writer.high_water,
        "droppedOutputEvents": 0,
        "droppedOutputBytes": 0,
        "connectionOpens": writer.connection_opens,
        "transactions": writer.transactions,
        "committedEvents": writer.committed_events,
        "pausedSessions": 0,
        "pausedMs": 0,
    }


def test_health_event_writer_last_error_only_when_failed(http: MemoryClient, api: Any) -> None:
    writer = api.store.writer
    writer.last_error = "OperationalError: database or disk is full"
    assert "lastError" not in http.get("/health").json()["eventWriter"]
    writer.state = "failed"
    try:
        block = http.get("/health").json()["eventWriter"]
    finally:
        writer.state = "healthy"
    assert (block["state"], block["lastError"]) == ("failed", "OperationalError: database or disk is full")
    assert list(block) == EVENT_WRITER_KEYS + ["lastError"]


def test_health_storage_block_has_real_values(http: MemoryClient, api: Any) -> None:
    storage = http.get("/health").json()["storage"]
    assert storage["status"] in ("ok", "warning")  # warning only on a nearly full test disk
    assert storage["databaseBytes"] == os.path.getsize(api.config.database) > 0
    assert storage["freeDiskBytes"] > 0 and storage["maintenanceBlocked"] is False
    assert storage["oldestRetainedEventAt"] is None and storage["lastPruneAt"] is None


def test_capabilities_catalog_lists_only_what_is_served(http: MemoryClient) -> None:
    response = http.get("/api/v1/capabilities")
    assert response.status == 200
    catalog = response.json()["capabilities"]
    assert [list(entry) for entry in catalog] == [["id", "label", "adapter", "status", "policy", "actions"]] * 2
    assert catalog == [
        {"id": "coven.sessions", "label": "Project-scoped harness sessions", "adapter": "coven-daemon",
         "status": "available", "policy": "allow", "actions": []},
        {"id": "coven.control.actions", "label": "Coven control-plane action router", "adapter": "coven-daemon",
         "status": "available", "policy": "allow", "actions": [REFRESH]},
    ]


# /actions


@pytest.mark.parametrize(
    ("body", "event_extra"),
    [
        ({"action": REFRESH}, {}),
        ({"action": f"  {REFRESH}\n", "origin": " cli ", "intentId": "i-1", "args": {"ignored": [1]}},
         {"origin": "cli", "intentId": "i-1"}),
        ({"action": REFRESH, "origin": "   ", "intentId": 7}, {}),
    ],
)
def test_refresh_action_succeeds(http: MemoryClient, body: Any, event_extra: dict[str, str]) -> None:
    response = http.post("/api/v1/actions", body)
    assert response.status == 200
    answer = response.json()
    assert list(answer) == ["ok", "accepted", "action", "status", "event"]
    assert answer == {
        "ok": True,
        "accepted": True,
        "action": REFRESH,
        "status": "completed",
        "event": {"kind": "capabilities.refreshed", "action": REFRESH, **event_extra, "payload": {"capabilities": 2}},
    }
    assert list(answer["event"]) == ["kind", "action", *event_extra, "payload"]


@pytest.mark.parametrize(
    ("body", "action", "reason", "code"),
    [
        (b"{not json", "(unknown)", "failed to parse request body", "invalid_request"),
        (b"\xff", "(unknown)", "failed to parse request body", "invalid_request"),
        (b"[1, 2]", "(unknown)", "request body must be a JSON object", "invalid_request"),
        (b'"refresh"', "(unknown)", "request body must be a JSON object", "invalid_request"),
        (b"null", "(unknown)", "request body must be a JSON object", "invalid_request"),
        (b"", "", "request body requires string field `action`", "invalid_request"),
        (b"{}", "", "request body requires string field `action`", "invalid_request"),
        (b'{"action": "   "}', "", "request body requires string field `action`", "invalid_request"),
        (b'{"action": 5}', "", "request body requires string field `action`", "invalid_request"),
        (b'{"action": " coven.nope "}', "coven.nope", "unknown action `coven.nope`", "action_rejected"),
    ],
)
def test_actions_rejections_keep_reference_body_and_envelope(
    http: MemoryClient, body: bytes, action: str, reason: str, code: str
) -> None:
    response = http.post("/actions", body)
    assert response.status == 400
    answer = response.json()
    assert list(answer) == ["ok", "accepted", "action", "status", "reason", "error"]
    assert answer == {
        "ok": False,
        "accepted": False,
        "action": action,
        "status": "rejected",
        "reason": reason,
        "error": {"code": code, "message": reason, "details": {"action": action}},
    }
