"""Hypothesis strategies for requests a hostile or broken client might send.

``requests()`` draws a whole request (method, raw target bytes, body bytes, extra headers)
aimed at one of the daemon's routes, with the path, the query and the body each either
plausible, subtly wrong or garbage. ``raw_requests()`` mangles such a request at the byte
level (framing, headers, truncation). Session ids worth hitting are drawn as the placeholders
in ``KNOWN_IDS`` (two live sessions, a finished one, an unknown one), which the test swaps for
real ids just before sending, so what is drawn never depends on the daemon's state; random
ids are mixed in.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

# Fuzz runs are the same every time (CI must not fail by luck); COVEN_FUZZ_EXPLORE=1 makes the
# soak runs draw new examples each time, to hunt for what the fixed ones miss.
EXPLORE = bool(os.environ.get("COVEN_FUZZ_EXPLORE"))

# (method, route template); ``{id}`` is a session id.
ROUTES = (
    ("GET", "/api-version"),
    ("GET", "/health"),
    ("GET", "/capabilities"),
    ("POST", "/actions"),
    ("GET", "/sessions"),
    ("POST", "/sessions"),
    ("GET", "/sessions/{id}"),
    ("POST", "/sessions/{id}/input"),
    ("POST", "/sessions/{id}/kill"),
    ("POST", "/sessions/{id}/resize"),
    ("GET", "/events"),
    ("GET", "/sessions/{id}/events"),
    ("GET", "/sessions/{id}/log"),
)
# The routes that touch a session, for fuzzing a daemon with live sessions to protect.
SESSION_ROUTES = tuple(route for route in ROUTES if "{id}" in route[1] or route[1] in ("/sessions", "/events"))
LIVE_IDS = ("@LIVE0@", "@LIVE1@", "@LIVE0@", "@DONE@", "@UNKNOWN@")
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "get", "post", "BREW", "CONNECT", "TRACE")
PREFIXES = ("/api/v1", "/api/v1", "/api/v1", "", "/api/v2", "/api", "/api/", "/API/v1", "//api/v1", "/api/v1/")
QUERY_KEYS = ("sessionId", "afterSeq", "afterEventId", "limit", "waitMs", "cursor", "includeArchived", "refresh")
BODY_KEYS = (
    "projectRoot", "harness", "prompt", "cwd", "launchMode", "rows", "cols", "title", "model", "conversation",
    "conversationId", "familiarId", "callerFamiliarId", "data", "executionBinding", "requestAdoption",
    "launchPolicy", "action", "origin", "intentId", "args",
)
BINDING_KEYS = ("executionBinding", "requestAdoption")
KNOWN_IDS = ("@LIVE0@", "@LIVE1@", "@DONE@", "@UNKNOWN@")


def with_binding(body: bytes) -> bytes:
    """``body`` made into a kill body the daemon must refuse: it carries a binding field.

    A kill with any other body is accepted (the reference ignores a malformed kill body), so
    this is how fuzzed kill bodies reach a live session without killing it.
    """
    try:
        value = json.loads(body) if body.strip() else {}
    except ValueError:
        value = {"unparsable": body.decode("latin-1")}
    if not isinstance(value, dict):
        value = {"value": value}
    if not any(key in value for key in BINDING_KEYS):
        value["requestAdoption"] = {"id": "fuzz"}
    return encode_json(value, True)


def resolve_ids(raw: bytes, ids: dict[str, str]) -> bytes:
    """Replace the ``KNOWN_IDS`` placeholders in a drawn request with real session ids."""
    for token, real in ids.items():
        raw = raw.replace(token.encode(), real.encode())
    return raw

# Characters that are legal inside a request target but mean something to a parser; bytes
# outside ASCII (which the HTTP layer refuses outright) only now and then.
ASCII_TARGET = st.one_of(
    st.sampled_from(list("abcXYZ019-._~:@!$&'()*+,;=/%?#[]{}|\\^`\"<>")),
    st.characters(min_codepoint=0x21, max_codepoint=0x7E),
)
ANY_TARGET = st.one_of(
    ASCII_TARGET,
    st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters="\x7f"),
    st.characters(min_codepoint=0x100, max_codepoint=0x10FFFF, exclude_categories=("Cs",)),
)


def rarely(n: int) -> st.SearchStrategy[bool]:
    """True about once in ``n`` draws; shrinks to False (a bare integer draw favours 0 instead)."""
    return st.sampled_from([False] * (n - 1) + [True])


def _target_text(max_size: int = 40) -> st.SearchStrategy[str]:
    ascii_only = st.text(ASCII_TARGET, max_size=max_size)
    return st.one_of(ascii_only, ascii_only, ascii_only, st.text(ANY_TARGET, max_size=max_size))


def _encode_target(text: str) -> bytes:
    """Latin-1 where possible (so raw high bytes reach the server), else UTF-8."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


INTEGER_TEXT = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from([
        "0", "1", "-1", "1000", "1001", "60000", "60001", "-0", "+5", "1_000", " 7", "7 ", "0x10", "1e3", "1.5",
        "NaN", "inf", "", "true", "null", "9" * 40, "\xb2", "\xb9", "\xb3", "\xbd", "12\xb2", "\uff11", "\u0661",
        "%31", "1%00",
    ]),
)
QUERY_VALUE = st.one_of(
    INTEGER_TEXT, INTEGER_TEXT, st.sampled_from(KNOWN_IDS), st.sampled_from(["true", "false", "ev-1", "ev-3", "1"]),
    _target_text(20).filter(lambda s: "&" not in s and "#" not in s),
)


def session_ids(known: tuple[str, ...] = KNOWN_IDS) -> st.SearchStrategy[str]:
    """Mostly an id the test knows; now and then a random or awkward one."""
    random_id = _target_text().filter(lambda s: "?" not in s and "#" not in s)
    special = st.sampled_from(["", "%2F", "a/b", "..", "../..", "x/input", "%00", "*", " ", "\u2603",
                               "00000000-0000-0000-0000-000000000000", "a" * 300])

    @st.composite
    def draw_id(draw: Any) -> str:
        if draw(rarely(5)):
            return draw(st.one_of(random_id, special))
        return draw(st.sampled_from(known))

    return draw_id()


JSON_SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(["", " ", "\r", "/", "/tmp", "..", "fuzz", "codex", "interactive", "stream", "nonInteractive",
                     "coven.capabilities.refresh", "init", "resume", "\u0000", "\ud7ff", "x" * 200]),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


def json_objects(keys: tuple[str, ...] = BODY_KEYS) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.one_of(st.sampled_from(keys), st.text(max_size=10)), JSON_VALUES, max_size=6)


def encode_json(value: Any, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@dataclass
class Request:
    method: str
    target: bytes
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    route: str = ""

    def encode(self) -> bytes:
        fields = {"Host": "coven", "Content-Type": "application/json", "Content-Length": str(len(self.body))}
        fields.update(self.headers)
        head = b"%s %s HTTP/1.1\r\n" % (self.method.encode(), self.target)
        head += b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in fields.items())
        return head + b"\r\n" + self.body

    def __repr__(self) -> str:
        return f"Request({self.method} {self.target!r} body={self.body[:300]!r} headers={self.headers})"


def _mutated(base: dict[str, Any], keys: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    """``base`` with up to three of ``keys`` dropped or set to any JSON value."""

    @st.composite
    def build(draw: Any) -> dict[str, Any]:
        body = dict(base)
        for key in draw(st.lists(st.sampled_from(keys), max_size=3)):
            if draw(st.booleans()) and key in body:
                del body[key]
            else:
                body[key] = draw(JSON_VALUES)
        return body

    return build()


SMALL_INTS = st.one_of(st.integers(-5, 1005), st.sampled_from([0, 1, 24, 80, 1000, 1001, 2**31, 2**63, -(2**63)]))
TEXTS = st.one_of(st.text(max_size=40), st.sampled_from(["", "\r", "ls\r", "\x03", "\x1b[6n", "\u0000", "x" * 5000]))


def plausible_body(template: str, valid_launch: dict[str, Any] | None) -> st.SearchStrategy[Any] | None:
    """A body shaped like what the route expects, one or two fields off."""
    if template == "/sessions" and valid_launch is not None:
        extra = st.fixed_dictionaries({}, optional={
            "cwd": st.sampled_from(["", "sub", "file", "..", "/", "/tmp", "missing", "sub/../..", "\u0000"]),
            "launchMode": st.sampled_from(["interactive", "nonInteractive", "stream", "stream", "batch", ""]),
            "rows": SMALL_INTS, "cols": SMALL_INTS, "title": TEXTS, "model": TEXTS,
            "conversation": st.one_of(st.none(), st.fixed_dictionaries(
                {"mode": st.sampled_from(["init", "resume", "x"]), "id": TEXTS})),
            "conversationId": TEXTS, "familiarId": TEXTS,
            "prompt": TEXTS,
        })
        return st.builds(lambda e, m: {**m, **e}, extra, _mutated(valid_launch, BODY_KEYS))
    if template.endswith("/input"):
        return st.one_of(st.fixed_dictionaries({"data": TEXTS}), _mutated({"data": "x"}, ("data", *BINDING_KEYS)))
    if template.endswith("/resize"):
        return st.one_of(st.fixed_dictionaries({"rows": SMALL_INTS, "cols": SMALL_INTS}),
                         _mutated({"rows": 24, "cols": 80}, ("rows", "cols", "extra")))
    if template.endswith("/kill"):
        return _mutated({}, BINDING_KEYS)
    if template == "/actions":
        return _mutated({"action": "coven.capabilities.refresh", "origin": "fuzz"}, ("action", "origin", "intentId", "args"))
    return None


@st.composite
def bodies(draw: Any, template: str = "", valid_launch: dict[str, Any] | None = None) -> bytes:
    """Mostly a body shaped for the route a field or two off; else none, garbage or any JSON."""
    plausible = plausible_body(template, valid_launch)
    if plausible is not None and not draw(rarely(3)):
        return encode_json(draw(plausible), draw(st.booleans()))
    kind = draw(st.sampled_from(["none", "bytes", "json", "object"]))
    if kind == "none":
        return draw(st.sampled_from([b"", b" ", b"\r\n", b"{}", b"null"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return encode_json(draw(JSON_VALUES), draw(st.booleans()))
    return encode_json(draw(json_objects()), draw(st.booleans()))


EVENT_QUERY = st.fixed_dictionaries(
    {"afterSeq": st.sampled_from(["0", "1", "2", "3", "99", "-1"])},
    optional={
        "sessionId": st.sampled_from(KNOWN_IDS),
        "waitMs": st.sampled_from(["0", "1", "20", "60000", "60001", "-1", "x"]),
        "limit": st.sampled_from(["0", "1", "2", "1000", "1001", "-5"]),
        "afterEventId": st.sampled_from(["ev-1", "ev-4", "nope", ""]),
    },
)


@st.composite
def queries(draw: Any, template: str = "") -> bytes:
    if template.endswith("events") and draw(st.booleans()):
        params = draw(EVENT_QUERY)
        if template == "/events":
            params.setdefault("sessionId", draw(st.sampled_from(KNOWN_IDS)))
        return b"?" + "&".join(f"{k}={v}" for k, v in params.items()).encode()
    key = st.one_of(st.sampled_from(QUERY_KEYS), st.sampled_from(QUERY_KEYS), _target_text(8))
    pairs = draw(st.lists(st.tuples(key, QUERY_VALUE), max_size=5))
    if not pairs and draw(st.booleans()):
        return b""
    parts = [_encode_target(k) + (b"" if draw(rarely(10)) else b"=" + _encode_target(v))
             for k, v in pairs]
    return b"?" + b"&".join(parts)


@st.composite
def requests(draw: Any, ids: tuple[str, ...] = KNOWN_IDS, valid_launch: dict[str, Any] | None = None,
             routes: tuple[tuple[str, str], ...] = ROUTES) -> Request:
    method, template = draw(st.sampled_from(routes))
    if draw(rarely(10)):
        method = draw(st.sampled_from(METHODS))
    prefix = draw(st.sampled_from(PREFIXES)) if draw(rarely(4)) else "/api/v1"
    path = prefix + template.replace("{id}", draw(session_ids(ids)))
    if draw(rarely(15)):
        path = "/" + draw(_target_text())
    target = _encode_target(path).replace(b" ", b"%20") + draw(queries(template))
    if not draw(rarely(10)):  # as a client would send it; else raw, which HTTP refuses
        target = b"".join(b"%%%02X" % c if c >= 0x80 else bytes([c]) for c in target)
    headers: dict[str, str] = {}
    if draw(rarely(10)):
        headers["Content-Type"] = draw(st.sampled_from([
            "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz", "multipart/form-data",
            "text/plain", "application/json; charset=latin-1", "",
        ]))
    if draw(rarely(15)):
        headers["Connection"] = draw(st.sampled_from(["close", "keep-alive", "upgrade", ""]))
    body = draw(bodies(template, valid_launch))
    return Request(method, target, body, headers, route=f"{method} {template}")


@st.composite
def raw_requests(draw: Any, ids: tuple[str, ...] = KNOWN_IDS, valid_launch: dict[str, Any] | None = None) -> bytes:
    """A request mangled where parsers break: framing, header syntax, truncation, stray bytes."""
    request = draw(requests(ids, valid_launch))
    mangle = draw(st.sampled_from([
        "garbage", "truncate", "flip", "insert", "length", "duplicate-length", "chunked", "version",
        "header-syntax", "many-headers", "long-line", "bare-lf", "pipelined",
    ]))
    raw = request.encode()
    if mangle == "garbage":
        return draw(st.binary(min_size=1, max_size=300))
    if mangle == "truncate":
        return raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    if mangle == "flip":
        data = bytearray(raw)
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        return bytes(data)
    if mangle == "insert":
        i = draw(st.integers(0, len(raw)))
        return raw[:i] + draw(st.binary(min_size=1, max_size=20)) + raw[i:]
    if mangle == "length":
        request.headers["Content-Length"] = draw(st.sampled_from([
            "-1", "abc", "", "1.5", " 3", "0x10", "99999999999999999999", str(4 * 1024 * 1024 + 1), "+4",
            str(len(request.body) + 5), "0",
        ]))
        return request.encode()
    if mangle == "duplicate-length":
        return raw.replace(b"\r\n\r\n", b"\r\nContent-Length: %d\r\n\r\n" % draw(st.integers(0, 50)), 1)
    if mangle == "chunked":
        request.headers["Transfer-Encoding"] = draw(st.sampled_from(["chunked", "gzip, chunked", "identity", "x"]))
        chunked = draw(st.sampled_from([b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\n", b"0\r\n\r\n", b"ffffffffff\r\n"]))
        return request.encode() + chunked
    if mangle == "version":
        version = draw(st.sampled_from([b"HTTP/1.0", b"HTTP/2.0", b"HTTP/9", b"", b"FOO", b"HTTP/1.1 extra"]))
        return raw.replace(b" HTTP/1.1\r\n", (b" " + version if version else b"") + b"\r\n", 1)
    if mangle == "header-syntax":
        line = draw(st.sampled_from([b"NoColon", b": empty-name", b"Bad Name: x", b"X: \x00", b" folded: x",
                                     b"Content-Length : 0", b"\x80\xff: y"]))
        return raw.replace(b"\r\n", b"\r\n" + line + b"\r\n", 1)
    if mangle == "many-headers":
        return raw.replace(b"\r\n", b"\r\n" + b"X-A: b\r\n" * draw(st.integers(400, 700)), 1)
    if mangle == "long-line":
        return raw.replace(b"\r\n", b"\r\nX-Long: " + b"a" * draw(st.integers(16000, 70000)) + b"\r\n", 1)
    if mangle == "bare-lf":
        return raw.replace(b"\r\n", b"\n")
    # The second request is never a HEAD, so the checker knows which answer has no body.
    return raw + draw(requests(ids, valid_launch).filter(lambda r: r.method != "HEAD")).encode()
