"""Errors that cross the wire: each becomes one structured envelope.

Handlers raise these; the JSON base resource turns them into responses. Clients branch on
``code``, so codes are stable and messages are for people.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A failure with an HTTP status, a stable code, a message and optional details.

    ``flat`` errors (413 ``payload_too_large``, 500 ``internal_error``) carry a sibling
    ``"ok": false`` as the reference daemon sends them; ``extra`` holds keys that precede
    the envelope (the ``/actions`` rejection body, contract A7).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        flat: bool = False,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.flat = flat
        self.extra = extra
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        body: dict[str, Any] = dict(self.extra or {})
        if self.flat:
            body["ok"] = False
        body["error"] = error
        return body


def invalid_request(message: str, details: dict[str, Any] | None = None, status: int = 400) -> ApiError:
    return ApiError(status, "invalid_request", message, details)


def route_not_found() -> ApiError:
    return ApiError(404, "not_found", "Route not found.")


def method_not_allowed(allowed: list[str]) -> ApiError:
    return ApiError(
        405,
        "method_not_allowed",
        "Method not allowed on this route.",
        {"allow": allowed},
        headers={"Allow": ", ".join(allowed)},
    )


def session_not_found(session_id: str) -> ApiError:
    return ApiError(404, "session_not_found", "Session was not found.", {"sessionId": session_id})


def session_not_live(session_id: str) -> ApiError:
    return ApiError(409, "session_not_live", "Session is not live.", {"sessionId": session_id})


def payload_too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"Request body exceeds {limit}-byte limit.", flat=True)


def internal_error() -> ApiError:
    return ApiError(500, "internal_error", "Internal server error; see the daemon log.", flat=True)
