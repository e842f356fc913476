"""Session fixtures: a daemon with the repository's `shell` adapter, and helpers to drive it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.daemon import ROOT, Daemon

SHELL_MANIFEST = ROOT / "adapters" / "shell.json"
FOLLOW_TIMEOUT = 30.0


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    return root


@pytest.fixture
def sessions(make_daemon: Callable[..., Daemon], project: Path) -> SessionClient:
    """A running daemon that knows the `shell` adapter, with short kill graces."""
    daemon = make_daemon(
        args=("--hup-grace", "0.3", "--term-grace", "0.7"),
        env={"COVEN_HARNESS_ADAPTER_MANIFEST": str(SHELL_MANIFEST)},
    )
    return SessionClient(daemon, project)


class SessionClient:
    """Launch shell sessions and follow their events by cursor, as a client would."""

    def __init__(self, daemon: Daemon, project: Path) -> None:
        self.daemon = daemon
        self.project = project

    def request(self, method: str, target: str, body: Any = None, **kwargs: Any):
        return self.daemon.request(method, target, body, **kwargs)

    def launch(self, prompt: str, **fields: Any) -> dict[str, Any]:
        body = {"projectRoot": str(self.project), "harness": "shell", "prompt": prompt, **fields}
        response = self.request("POST", "/api/v1/sessions", body)
        assert response.status == 201, response.body
        return response.json()

    def page(self, session_id: str, **params: Any) -> dict[str, Any]:
        query = "&".join(f"{k}={v}" for k, v in {"sessionId": session_id, **params}.items())
        timeout = int(params.get("waitMs", 0)) / 1000 + 10
        response = self.request("GET", f"/api/v1/events?{query}", timeout=timeout)
        assert response.status == 200, response.body
        return response.json()

    def follow(self, session_id: str, until: Callable[[list[dict[str, Any]]], bool],
               timeout: float = FOLLOW_TIMEOUT, after: int = 0) -> list[dict[str, Any]]:
        """Long-poll by cursor until ``until(events)`` holds; every wait is bounded."""
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while not until(events):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out; events so far: {events[-5:]}"
            page = self.page(session_id, afterSeq=after, waitMs=int(min(remaining, 5) * 1000))
            events += page["events"]
            if page["events"]:
                after = page["events"][-1]["seq"]
        return events

    def until_exit(self, session_id: str, timeout: float = FOLLOW_TIMEOUT) -> list[dict[str, Any]]:
        return self.follow(session_id, lambda events: any(e["kind"] == "exit" for e in events), timeout)

    def until_output(self, session_id: str, text: str, after: int = 0) -> list[dict[str, Any]]:
        return self.follow(session_id, lambda events: text in output(events), after=after)

    def record(self, session_id: str) -> dict[str, Any]:
        response = self.request("GET", f"/api/v1/sessions/{session_id}")
        assert response.status == 200, response.body
        return response.json()

    def send(self, session_id: str, data: str) -> None:
        response = self.request("POST", f"/api/v1/sessions/{session_id}/input", {"data": data})
        assert response.status == 202, response.body


def output(events: list[dict[str, Any]]) -> str:
    return "".join(json.loads(e["payload_json"])["data"] for e in events if e["kind"] == "output")


def payload(event: dict[str, Any]) -> Any:
    return json.loads(event["payload_json"])
