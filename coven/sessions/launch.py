"""Launch requests: validated in the contract's order, before any row or process exists.

``parse_launch`` turns a request body into a ``LaunchPlan`` or raises the first failure of
contract B §6.3 (with this project's A5, A9, A11 and A15 decisions).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from coven.errors import ApiError, invalid_request
from coven.sessions.harness import Adapter, HarnessRegistry

LAUNCH_MODES = ("interactive", "nonInteractive", "stream")
CONVERSATION_ID = re.compile(r"[A-Za-z0-9._-]+\Z")
MAX_DIMENSION = 1000


@dataclass(frozen=True)
class LaunchPlan:
    project_root: str
    cwd: str
    adapter: Adapter
    launch_mode: str
    prompt: str
    title: str
    model: str | None
    conversation_id: str | None
    rows: int
    cols: int


def _string(body: dict[str, Any], key: str) -> str | None:
    """Non-string optional fields are treated as absent (B §6.3)."""
    value = body.get(key)
    return value if isinstance(value, str) else None


def _required(body: dict[str, Any], key: str) -> str:
    value = _string(body, key)
    if value is None or not value.strip():
        raise invalid_request(f"request body requires string field `{key}`")
    return value.strip()


def _directory(path: str, field: str) -> str:
    try:
        real = os.path.realpath(path)
    except ValueError:  # a NUL byte: no such path can exist
        raise invalid_request(f"{field} is not a valid path", {"field": field}) from None
    if not os.path.isdir(real):
        what = "does not exist" if not os.path.exists(real) else "is not a directory"
        raise invalid_request(f"{field} {what}: {real}", {"field": field, "path": real})
    return real


def dimension(body: Any, key: str, default: int | None = None) -> int:
    """A terminal size field (contract A9): an integer 1..1000; required when no default."""
    if not isinstance(body, dict) or key not in body:
        if default is not None:
            return default
        raise invalid_request(f"request body requires integer field `{key}`", {"field": key})
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DIMENSION:
        raise invalid_request(f"`{key}` must be an integer between 1 and {MAX_DIMENSION}", {"field": key, key: value})
    return value


def binding_fields(body: Any) -> list[str]:
    """Psyche binding fields this daemon does not support (contract A11)."""
    if not isinstance(body, dict):
        return []
    return [key for key in ("executionBinding", "requestAdoption") if key in body]


def reject_binding(body: Any) -> None:
    fields = binding_fields(body)
    if fields:
        raise ApiError(
            400,
            "execution_binding_unsupported",
            "This daemon does not support execution bindings or request adoption.",
            {"fields": fields},
        )


def parse_launch(body: Any, registry: HarnessRegistry) -> LaunchPlan:
    if not isinstance(body, dict):
        raise invalid_request("request body must be a JSON object")
    reject_binding(body)
    if "launchPolicy" in body:
        raise invalid_request("launchPolicy is not supported by this daemon", {"field": "launchPolicy"})

    root_text = _required(body, "projectRoot")
    project_root = _directory(os.path.abspath(root_text), "projectRoot")
    cwd_text = _string(body, "cwd") or ""
    cwd = _directory(os.path.join(project_root, cwd_text), "cwd")
    if os.path.commonpath([project_root, cwd]) != project_root:
        raise ApiError(
            400,
            "session.cwd_outside_root",
            "cwd must canonicalize inside project root",
            {"projectRoot": project_root, "cwd": cwd},
        )

    adapter = registry.resolve(_required(body, "harness"))
    launch_mode = body.get("launchMode")
    if not isinstance(launch_mode, str):
        launch_mode = "interactive"
    if launch_mode not in LAUNCH_MODES:
        raise invalid_request(
            f"launchMode must be `interactive`, `nonInteractive`, or `stream`, got `{launch_mode}`",
            {"launchMode": launch_mode},
        )
    prompt = _required(body, "prompt")
    if "\x00" in prompt:  # it becomes an argument of exec, which cannot carry one
        raise invalid_request("prompt must not contain NUL characters", {"field": "prompt"})
    conversation_id = _conversation(body)

    familiar = (_string(body, "familiarId") or "").strip()
    if familiar:  # no familiar roster in this daemon: every id is unknown
        raise ApiError(400, "unknown_familiar", f"unknown familiar `{familiar}`", {"familiarId": familiar})

    title = _string(body, "title")
    model = (_string(body, "model") or "").strip() or None
    return LaunchPlan(
        project_root=project_root,
        cwd=cwd,
        adapter=adapter,
        launch_mode=launch_mode,
        prompt=prompt,
        title=title if title and title.strip() else prompt,
        model=model,
        conversation_id=conversation_id,
        rows=dimension(body, "rows", 24),
        cols=dimension(body, "cols", 80),
    )


def _conversation(body: dict[str, Any]) -> str | None:
    conversation = body.get("conversation")
    conversation_id = (_string(body, "conversationId") or "").strip() or None
    if conversation is None:
        return conversation_id
    if not isinstance(conversation, dict):
        raise invalid_request("conversation must be an object with `mode` and `id`")
    if conversation.get("mode") not in ("init", "resume"):
        raise invalid_request("conversation.mode must be `init` or `resume`")
    raw = conversation.get("id")
    ident = raw.strip() if isinstance(raw, str) else ""
    if not ident or not CONVERSATION_ID.match(ident):
        raise invalid_request("conversation.id must be a non-empty string of [A-Za-z0-9._-]")
    return conversation_id or ident
