"""HTTP framing, routing and the error envelope through the real CovenSite in memory.

Contract A6 (404/405), A12 (framing, half-close), B §1 (413, reasons), B §2 (routing), B §3
(envelope). Every response here is parsed strictly: exactly one Content-Length, no
Transfer-Encoding, the body exactly that long.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed

from coven.api.http import IDLE_TIMEOUT, MAX_BODY_BYTES, CovenSite
from coven.api.resource import JsonResource, Router, normalize, parse_query
from coven.errors import ApiError
from tests.conftest import MemoryClient
from tests.daemon import encode_request

ROUTES = ["/api-version", "/health", "/capabilities", "/sessions", "/sessions/some-id"]


class Probe:
    """Routes whose behaviour a test controls."""

    def __init__(self) -> None:
        self.pending: Deferred | None = None
        self.cancelled = False

    def router(self) -> Router:
        router = Router()
        router.add("/boom", GET=self.boom)
        router.add("/unencodable", GET=lambda request: (200, object()))
        router.add("/failing", GET=lambda request: fail(ValueError("secret async internals")))
        router.add("/pending", GET=self.wait)
        router.add("/json", POST=lambda request: (200, {"got": request.json(sessionId="s1")}))
        router.add("/later", GET=lambda request: succeed((201, {"later": True})))
        router.add("/teapot", GET=self.teapot)
        return router

    def boom(self, request: Any) -> Any:
        raise RuntimeError("secret internals")

    def wait(self, request: Any) -> Deferred:
        def cancel(_: Deferred) -> None:
            self.cancelled = True

        self.pending = Deferred(cancel)
        return self.pending

    def teapot(self, request: Any) -> Any:
        raise ApiError(422, "unprocessable", "No.", {"why": "because"}, headers={"X-Extra": "1"})


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def custom(probe: Probe, clock: Any) -> MemoryClient:
    return MemoryClient(CovenSite(JsonResource(probe.router()), reactor=clock))


def body_of(response: Any) -> Any:
    return response.json()


# routing (B §2, A6)


@pytest.mark.parametrize("route", ROUTES)
def test_unversioned_alias_answers_like_v1(http: MemoryClient, route: str) -> None:
    versioned, alias = http.get("/api/v1" + route), http.get(route)
    assert (versioned.status, stable(versioned.json())) == (alias.status, stable(alias.json()))
    assert versioned.status in (200, 404)


def stable(body: Any) -> Any:
    """Without the live counters (free disk, writer connection) that may move between two requests."""
    if isinstance(body, dict):
        return {key: value for key, value in body.items() if key not in ("eventWriter", "storage")}
    return body


@pytest.mark.parametrize("target", ["/api/v1", "/api/v1/", "/api/", "/api/x", "/api/v1/nope", "/nope", "/",
                                    "/api/v1/health/extra", "/api/v1//health", "/API/v1/health"])
def test_unknown_route_is_not_found_without_details(http: MemoryClient, target: str) -> None:
    response = http.get(target)
    assert (response.status, response.reason) == (404, "Not Found")
    assert body_of(response) == {"error": {"code": "not_found", "message": "Route not found."}}


@pytest.mark.parametrize("target", ["/api/v2/health", "/api/v0/sessions?limit=1", "/api/latest/x/y"])
def test_unsupported_api_version(http: MemoryClient, target: str) -> None:
    response = http.get(target)
    version = target.split("/")[2]
    assert response.status == 404
    assert body_of(response) == {
        "error": {
            "code": "invalid_request",
            "message": "Unsupported API version.",
            "details": {"apiVersion": version, "supportedApiVersions": ["v1"]},
        }
    }


@pytest.mark.parametrize(
    ("method", "target", "allow"),
    [
        ("POST", "/api/v1/health", "GET"),
        ("DELETE", "/api/v1/api-version", "GET"),
        ("PUT", "/capabilities", "GET"),
        ("GET", "/api/v1/actions", "POST"),
        ("HEAD", "/api/v1/actions", "POST"),
        ("PATCH", "/api/v1/sessions/abc", "GET"),
    ],
)
def test_wrong_method_is_405_with_allow(http: MemoryClient, method: str, target: str, allow: str) -> None:
    response = http.request(method, target)
    assert (response.status, response.reason) == (405, "Method Not Allowed")
    assert response.header("Allow") is not None and allow in response.header("Allow").split(", ")
    if method != "HEAD":
        error = body_of(response)["error"]
        assert error["code"] == "method_not_allowed"
        assert allow in error["details"]["allow"]


def test_normalize_and_query_parsing_do_not_decode() -> None:
    assert normalize("/api/v1/sessions/a%2Fb") == "/sessions/a%2Fb"
    assert normalize("/sessions") == "/sessions"
    assert parse_query("a=1&a=2&b&c=%20&=x&d=") == {"a": "1", "c": "%20", "": "x", "d": ""}


# framing (A12, B §1)


def test_half_closed_client_gets_the_whole_response_then_close(http: MemoryClient) -> None:
    connection = http.connect()
    connection.send(encode_request("GET", "/api/v1/health"))
    connection.half_close()
    [response] = connection.responses()
    assert response.status == 200 and body_of(response)["ok"] is True
    assert connection.closing


def test_closing_unregisters_the_channel_as_producer_first(http: MemoryClient) -> None:
    """Else a transport that paused it on a large response resumes it instead of closing."""
    connection = http.connect()
    assert connection.transport.producer is connection.channel
    connection.send(encode_request("GET", "/api/v1/health"))
    connection.half_close()
    assert connection.closing and connection.transport.producer is None


def test_half_close_while_the_answer_is_pending(custom: MemoryClient, probe: Probe) -> None:
    connection = custom.connect()
    connection.send(encode_request("GET", "/pending"))
    connection.half_close()
    assert connection.written == b"" and not connection.closing
    assert probe.pending is not None
    probe.pending.callback((200, {"late": True}))
    [response] = connection.responses()
    assert body_of(response) == {"late": True}
    assert connection.closing


def test_half_close_in_the_middle_of_a_body_closes_without_answer(http: MemoryClient) -> None:
    connection = http.connect()
    connection.send(encode_request("POST", "/api/v1/actions", {"action": "coven.capabilities.refresh"})[:-5])
    connection.half_close()
    assert connection.written == b""
    assert connection.closing


def test_keep_alive_answers_pipelined_requests_in_order(http: MemoryClient) -> None:
    connection = http.connect()
    connection.send(encode_request("GET", "/api/v1/api-version") + encode_request("GET", "/api/v1/capabilities"))
    first, second = connection.responses()
    assert "apiVersion" in body_of(first) and "capabilities" in body_of(second)
    assert not connection.closing
    connection.send(encode_request("GET", "/health", headers={"Connection": "close"}))
    third = connection.responses()[2]
    assert third.header("Connection") == "close" and body_of(third)["ok"] is True
    assert connection.closing


def test_idle_connection_times_out(http: MemoryClient, clock: Any) -> None:
    connection = http.connect()
    connection.send(b"GET /api/v1/health HTTP/1.1\r\n")
    clock.advance(IDLE_TIMEOUT - 1)
    assert not connection.closing
    clock.advance(2)
    assert connection.closing and connection.written == b""


def test_declared_body_over_the_cap_is_refused_before_it_is_read(http: MemoryClient) -> None:
    connection = http.connect()
    head = b"POST /api/v1/actions HTTP/1.1\r\nHost: coven\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1)
    connection.send(head)
    body = b'{"ok":false,"error":{"code":"payload_too_large","message":"Request body exceeds 4194304-byte limit."}}'
    assert connection.written == (
        b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )
    assert connection.closing and connection.transport.producer is None
    connection.send(b"x" * 65536)  # whatever the client still sends is swallowed
    assert len(connection.responses()) == 1


def chunked(body: bytes, size: int = 1024 * 1024) -> bytes:
    pieces = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


def test_a_chunked_body_is_held_to_the_same_cap(http: MemoryClient) -> None:
    head = b"POST /api/v1/actions HTTP/1.1\r\nHost: coven\r\nTransfer-Encoding: chunked\r\n\r\n"
    small = http.request("", "", raw=head + chunked(b'{"action":"coven.capabilities.refresh"}'))
    assert small.status == 200
    connection = http.connect()
    connection.send(head + chunked(b" " * (MAX_BODY_BYTES + 1))[:-5])
    [response] = connection.responses()
    assert response.status == 413 and response.json()["error"]["code"] == "payload_too_large"
    assert connection.closing
    connection.send(b"0\r\n\r\n")
    assert len(connection.responses()) == 1


def test_body_of_exactly_the_cap_is_read(http: MemoryClient) -> None:
    body = b'{"action":"coven.capabilities.refresh"}'
    response = http.post("/api/v1/actions", body + b" " * (MAX_BODY_BYTES - len(body)))
    assert response.status == 200 and body_of(response)["status"] == "completed"


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /api/v1/health HTTP/1.1\r\nContent-Length: lots\r\n\r\n",
        b"GET /api/v1/health HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /api/v1/health HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ],
)
def test_unreadable_request_gets_a_framed_json_400(http: MemoryClient, raw: bytes) -> None:
    response = http.request("", "", raw=raw)
    assert (response.status, response.header("Connection")) == (400, "close")
    assert body_of(response) == {"ok": False, "error": {"code": "invalid_request", "message": "Malformed HTTP request."}}


def test_api_error_status_reason_details_and_headers(custom: MemoryClient) -> None:
    response = custom.get("/teapot")
    assert (response.status, response.reason, response.header("X-Extra")) == (422, "Unprocessable Content", "1")
    assert body_of(response) == {"error": {"code": "unprocessable", "message": "No.", "details": {"why": "because"}}}


def test_deferred_answer(custom: MemoryClient) -> None:
    response = custom.get("/later")
    assert (response.status, response.reason, body_of(response)) == (201, "Created", {"later": True})


# bad bodies and failures (B §3)


@pytest.mark.parametrize("body", [b"{", b"[1,", b'{"a":}', b"\xff\xfe", b"nul"])
def test_malformed_json_is_400_with_details(custom: MemoryClient, body: bytes) -> None:
    response = custom.post("/json", body)
    error = body_of(response)["error"]
    assert response.status == 400
    assert (error["code"], error["message"]) == ("invalid_request", "failed to parse request body")
    assert error["details"]["sessionId"] == "s1" and error["details"]["detail"]


def test_empty_body_is_an_empty_object(custom: MemoryClient) -> None:
    assert body_of(custom.post("/json")) == {"got": {}}


@pytest.mark.parametrize("target", ["/boom", "/failing", "/unencodable"])
def test_unexpected_exception_is_500_logged_never_sent(
    custom: MemoryClient, logged: list[dict[str, Any]], target: str
) -> None:
    response = custom.get(target)
    assert (response.status, response.reason) == (500, "Internal Server Error")
    assert body_of(response) == {
        "ok": False,
        "error": {"code": "internal_error", "message": "Internal server error; see the daemon log."},
    }
    assert b"secret" not in response.raw and b"Traceback" not in response.raw
    failures = [event["log_failure"] for event in logged if "log_failure" in event]
    assert len(failures) == 1 and failures[0].getTraceback()


def test_unexpected_exception_in_a_real_route(
    http: MemoryClient, api: Any, logged: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> Any:
        raise OSError("secret disk detail")

    monkeypatch.setattr(api.store, "storage_health", broken)
    response = http.get("/api/v1/health")
    assert response.status == 500 and body_of(response)["error"]["code"] == "internal_error"
    assert b"secret" not in response.raw
    assert any("log_failure" in event and event["log_failure"].check(OSError) for event in logged)


def test_client_gone_cancels_pending_work_and_nothing_is_written(custom: MemoryClient, probe: Probe) -> None:
    connection = custom.connect()
    connection.send(encode_request("GET", "/pending"))
    connection.drop()
    assert probe.cancelled
    assert connection.written == b""
