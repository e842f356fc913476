"""Contract discovery: api-version, health, the capability catalog and the action router."""

from __future__ import annotations

import os
from typing import Any

import msgspec

from coven import __version__
from coven.api.resource import ApiRequest, Router
from coven.errors import ApiError

API_VERSION = "coven.daemon.v1"
REFRESH_ACTION = "coven.capabilities.refresh"

# Only what this daemon serves (contract B §4.2, A10); clients ignore unknown ids.
CATALOG = (
    {
        "id": "coven.sessions",
        "label": "Project-scoped harness sessions",
        "adapter": "coven-daemon",
        "status": "available",
        "policy": "allow",
        "actions": [],
    },
    {
        "id": "coven.control.actions",
        "label": "Coven control-plane action router",
        "adapter": "coven-daemon",
        "status": "available",
        "policy": "allow",
        "actions": [REFRESH_ACTION],
    },
)

CAPABILITIES = {
    "sessions": True,
    "events": True,
    "eventCursor": "sequence",
    "structuredErrors": True,
    "eventWait": True,
    "sessionResize": True,
}


class Discovery:
    """Answers the routes a client calls before anything else."""

    def __init__(self, daemon: Any) -> None:
        self._daemon = daemon

    def register(self, router: Router) -> None:
        router.add("/api-version", GET=self.api_version)
        router.add("/health", GET=self.health)
        router.add("/capabilities", GET=self.capabilities)
        router.add("/actions", POST=self.actions)

    def api_version(self, request: ApiRequest) -> tuple[int, Any]:
        return 200, {"apiVersion": "v1", "supportedApiVersions": ["v1"]}

    def health(self, request: ApiRequest) -> tuple[int, Any]:
        daemon = self._daemon
        writer = daemon.store.writer
        event_writer: dict[str, Any] = {
            "state": writer.state,
            "queuedEvents": writer.queued_events,
            "queuedBytes": writer.queued_bytes,
            "capacityBytes": writer.high_water,
            "droppedOutputEvents": 0,
            "droppedOutputBytes": 0,
            "connectionOpens": writer.connection_opens,
            "transactions": writer.transactions,
            "committedEvents": writer.committed_events,
            "pausedSessions": daemon.supervisor.paused_sessions,
            "pausedMs": daemon.supervisor.paused_ms(),
        }
        if writer.state == "failed" and writer.last_error:
            event_writer["lastError"] = writer.last_error
        return 200, {
            "ok": True,
            "apiVersion": API_VERSION,
            "covenVersion": __version__,
            "capabilities": CAPABILITIES,
            "daemon": {"pid": os.getpid(), "startedAt": daemon.started_at, "socket": str(daemon.config.socket)},
            "eventWriter": event_writer,
            "storage": daemon.store.storage_health(daemon.config.retention_days),
        }

    def capabilities(self, request: ApiRequest) -> tuple[int, Any]:
        return 200, {"capabilities": CATALOG}

    def actions(self, request: ApiRequest) -> tuple[int, Any]:
        try:
            body = msgspec.json.decode(request.body) if request.body.strip() else {}
        except msgspec.DecodeError:
            raise _rejected("(unknown)", "failed to parse request body", "invalid_request") from None
        if not isinstance(body, dict):
            raise _rejected("(unknown)", "request body must be a JSON object", "invalid_request")
        action = _trimmed(body.get("action"))
        if action is None:
            raise _rejected("", "request body requires string field `action`", "invalid_request")
        if action != REFRESH_ACTION:
            raise _rejected(action, f"unknown action `{action}`", "action_rejected")
        event: dict[str, Any] = {"kind": "capabilities.refreshed", "action": action}
        for key in ("origin", "intentId"):
            value = _trimmed(body.get(key))
            if value is not None:
                event[key] = value
        event["payload"] = {"capabilities": len(CATALOG)}
        return 200, {"ok": True, "accepted": True, "action": action, "status": "completed", "event": event}


def _trimmed(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _rejected(action: str, reason: str, code: str) -> ApiError:
    """The reference rejection body, with the envelope beside it (contract A7)."""
    return ApiError(
        400,
        code,
        reason,
        {"action": action},
        extra={"ok": False, "accepted": False, "action": action, "status": "rejected", "reason": reason},
    )
