"""The one JSON resource: routing, request parsing, encoding and the error envelope.

Handlers take an ``ApiRequest`` and return ``(status, body)`` or a Deferred of it, or raise
``ApiError``. Nothing here renders HTML, and nothing a handler does can leak a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec
from twisted.internet.defer import CancelledError, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from coven.api.http import reason
from coven.errors import ApiError, internal_error, invalid_request, method_not_allowed, route_not_found
from coven.wire import encode

Handler = Callable[..., Any]
log = Logger()


class ApiRequest:
    """What a handler sees: method, raw path parameters, raw query, body bytes."""

    def __init__(self, request: Any) -> None:
        self.twisted = request
        self.method = request.method.decode("latin-1")
        target = request.uri.decode("latin-1")
        self.path, _, query = target.partition("?")
        self.query = parse_query(query)
        self.body = request.content.read() if request.content is not None else b""

    def json(self, **details: Any) -> Any:
        """The body as JSON; empty means ``{}``; anything unparsable is a clean 400."""
        if not self.body.strip():
            return {}
        try:
            return msgspec.json.decode(self.body)
        except msgspec.DecodeError as e:
            raise invalid_request("failed to parse request body", {**details, "detail": str(e)}) from e


def parse_query(query: str) -> dict[str, str]:
    """Split on ``&`` and ``=`` with no decoding; first occurrence wins (contract B §2)."""
    params: dict[str, str] = {}
    for part in query.split("&"):
        key, sep, value = part.partition("=")
        if sep and key not in params:
            params[key] = value
    return params


def normalize(path: str) -> str:
    """Map ``/api/v1/<rest>`` to ``/<rest>``; other paths outside ``/api/`` are aliases."""
    if not path.startswith("/api/"):
        return path
    version, slash, rest = path[len("/api/"):].partition("/")
    if not slash or (version == "v1" and not rest):
        raise route_not_found()
    if version != "v1":
        raise ApiError(
            404,
            "invalid_request",
            "Unsupported API version.",
            {"apiVersion": version, "supportedApiVersions": ["v1"]},
        )
    return "/" + rest


class Router:
    """Ordered routes; a path that matches only with other methods is a 405."""

    def __init__(self) -> None:
        self._routes: list[tuple[re.Pattern[str], dict[str, Handler]]] = []

    def add(self, pattern: str, **handlers: Handler) -> None:
        self._routes.append((re.compile(pattern + r"\Z"), handlers))

    def resolve(self, method: str, route: str) -> tuple[Handler, dict[str, str]]:
        allowed: list[str] = []
        for pattern, handlers in self._routes:
            match = pattern.match(route)
            if match is None:
                continue
            if method in handlers:
                return handlers[method], match.groupdict()
            allowed += [m for m in handlers if m not in allowed]
        if allowed:
            raise method_not_allowed(allowed)
        raise route_not_found()


class JsonResource(Resource):
    """Leaf resource owning content type, encoding and the envelope for every answer."""

    isLeaf = True

    def __init__(self, router: Router) -> None:
        super().__init__()
        self._router = router

    def render(self, request: Any) -> Any:
        # Answering inside the Deferred chain means a result that cannot be encoded also
        # becomes an envelope, never Twisted's HTML error page or a request left hanging.
        finished = request.notifyFinish()
        result = maybeDeferred(self._handle, request)
        finished.addErrback(lambda _: result.cancel())
        result.addCallback(lambda answer: self._respond(request, *answer))
        result.addErrback(lambda f: self._fail(request, f))
        return NOT_DONE_YET

    def _handle(self, request: Any) -> Any:
        api_request = ApiRequest(request)
        handler, params = self._router.resolve(api_request.method, normalize(api_request.path))
        return handler(api_request, **params)

    def _fail(self, request: Any, failure: Failure) -> None:
        if failure.check(CancelledError) and request._disconnected:
            return
        error = failure.value
        if not isinstance(error, ApiError):
            log.failure("unhandled error answering {method} {uri}", failure,
                        method=request.method, uri=request.uri)
            error = internal_error()
        self._respond(request, error.status, error.body(), error.headers)

    @staticmethod
    def _respond(request: Any, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        if request._disconnected or request.finished:
            return
        payload = body if isinstance(body, bytes) else encode(body)
        request.setResponseCode(status, reason(status))
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Content-Length", str(len(payload)).encode())
        for name, value in (headers or {}).items():
            request.setHeader(name.encode(), value.encode())
        request.write(payload)
        request.finish()
