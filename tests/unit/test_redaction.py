"""Redaction before storage: the built-in patterns and keys of contract §7.4, and extra patterns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coven.redaction import PATTERN, REDACTED, Redactor, is_secret_key, redact_payload, redact_text, settled

R = REDACTED
OPENAI = "sk-" + "a" * 40
ANTHROPIC = "sk-ant-api03-" + "c" * 40
GITHUB = "ghp_" + "b" * 36


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # PEM private key blocks, any key type, across lines
        (
            "key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAAAA\n-----END RSA PRIVATE KEY-----\nafter",
            f"key:\n{R}\nafter",
        ),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\r\nb3Bl\r\n-----END OPENSSH PRIVATE KEY-----", R),
        ("-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----", None),
        # Authorization headers
        (f"Authorization: Bearer {OPENAI}\r\n", f"{R}\r\n"),
        ("curl -H 'authorization:basic dXNlcjpwYXNz' x", f"curl -H '{R}' x"),
        # Cookie lines, up to the end of the line
        ("Cookie: session=abc; theme=dark\r\nnext", f"{R}\r\nnext"),
        ("< set-cookie: id=1; HttpOnly\n", f"< {R}\n"),
        # NAME=value for the listed environment names, case-insensitive, _ or - optional
        (f"export OPENAI_API_KEY={OPENAI}\n", f"export {R}\n"),
        ("ANTHROPIC_API_KEY='x y'", f"{R} y'"),
        ('GITHUB_TOKEN="ghx"; GH_TOKEN=abc', f'{R}"; {R}'),  # the closing quote stays, as upstream
        ("api-key = 123 apikey=456", f"{R} {R}"),
        ("Access_Token=a refresh-token=b AUTHTOKEN=c", f"{R} {R} {R}"),
        ("SECRET=s PASSWORD=p private_key=k", f"{R} {R} {R}"),
        # key: value / key=value
        ('{password: "hunter2", "other": 1}', "{" + R + '", "other": 1}'),
        ('{"password": "hunter2"}', None),  # a quoted JSON key is left to key-based redaction
        ("secret: top, next", f"{R}, next"),
        ("private-key:abc}", f"{R}}}"),
        # tokens
        (f"use {ANTHROPIC} now", f"use {R} now"),
        (f"({OPENAI})", f"({R})"),
        (f"{GITHUB} gho_{'x' * 20} ghs_{'y' * 30}", f"{R} {R} {R}"),
        (f"github_pat_{'Z9_' * 10}.", f"{R}."),
        # URLs that name a gateway or internal/private host
        ("see https://private-gateway.example.test/v1 for", f"see {R} for"),
        ("HTTP://api.INTERNAL.corp/x?y=1 ok", f"{R} ok"),
        # query parameters
        ("GET /cb?code=1&token=abc123&x=2", f"GET /cb?code=1{R}&x=2"),
        ("/x?access_token=zzz /y?key=k /z?api_key=q&secret=s", f"/x{R} /y{R} /z{R}{R}"),
    ],
)
def test_built_in_patterns(text: str, expected: str | None) -> None:
    assert redact_text(text) == (text if expected is None else expected)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain ascii line\r\n",
        "\x1b[1;32m✓\x1b[0m 12 passed in 0.3s\r\n\x1b[2K\x1b[1G\x1b[?25l",
        "the token budget is 12k tokens; press any key; password prompts are off",
        "Secrets live in the vault. Cookies are crumbs.",
        "task-1234567890abcdefghijKLMN disk-12345678901234567890123",
        "sk-short ghp_short github_pat_short",
        "https://example.com/path?page=2&sort=key",
        "def authorize(self, key, token): return self._keys[key]",
        "keyboard monkey apikeys api_keys_list",
        "日本語のテキスト — émoji 🎉 and İstanbul",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "x" * 70000,
    ],
)
def test_ordinary_text_is_unchanged(text: str) -> None:
    assert redact_text(text) == text


def test_several_secrets_in_one_chunk() -> None:
    line = f"\x1b[33mOPENAI_API_KEY={OPENAI}\x1b[0m and Authorization: Bearer {GITHUB}\r\n"
    chunk = ("ordinary output line\r\n" * 500 + line) * 5
    redacted = redact_text(chunk)
    assert OPENAI not in redacted and GITHUB not in redacted
    assert redacted.count(R) == 10
    assert redacted.count("ordinary output line\r\n") == 2500


# The fast path tries the pattern only where a trigger can start a match; it must agree with a
# plain substitution everywhere. The fragments are chosen to collide with every trigger.
FRAGMENTS = [
    "key", "KEY", "api", "API_", "api-", "_", "-", "?", "&", "=", ":", " ", "\n", "\r\n", "'", '"',
    "token", "TOKEN", "access", "Refresh", "auth", "gh_", "github_", "openai_", "anthropic_",
    "private", "PRIVATE KEY", "-----BEGIN ", "-----END ", "-----", "RSA ", "secret", "Password",
    "cookie", "Set-", "Authorization", "Bearer ", "Basic ", "sk-", "sk-ant-", "ghp_", "github_pat_",
    "a" * 20, "Z9" * 11, "https://", "http", "internal", "gateway", "x.y/", "İ", "é", "}", ",", "1",
    "\u017fecret", "pa\u017f\u017fword", "author\u0131zation", "\u212aey",
]


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=30).map("".join))
def test_fast_path_equals_full_substitution(text: str) -> None:
    assert redact_text(text) == PATTERN.sub(REDACTED, text)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_arbitrary_text_equals_full_substitution(text: str) -> None:
    assert redact_text(text) == PATTERN.sub(REDACTED, text)


@pytest.mark.parametrize("unit", ["key", "api_key=x ", "http://internal ", "sk-" + "a" * 20 + " ", "?token=1&"])
def test_text_dense_with_triggers_equals_full_substitution(unit: str) -> None:
    text = unit * (70000 // len(unit))
    assert redact_text(text) == PATTERN.sub(REDACTED, text)


def test_case_folding_oddities_still_redact() -> None:
    assert redact_text(f"İ password=x {OPENAI}") == f"İ {R} {R}"
    assert redact_text("\u017fecret=x pa\u017f\u017fword=y") == f"{R} {R}"  # long s matches s
    assert redact_text("author\u0131zation: Bearer t") == R  # dotless i matches i
    assert redact_text("api_\u212aey=x") == R  # Kelvin sign matches k


# keys


@pytest.mark.parametrize(
    "key",
    [
        "authorization", "Authorization", "cookie", "Set-Cookie", "token", "TOKEN", "api_key", "X-Api-Key",
        "apikey", "openai_api_key", "ACCESS_TOKEN", "refresh-token", "auth_token", "github_token",
        "private_key", "db_password", "clientSecret", "session_token",
    ],
)
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["data", "exitCode", "status", "tokens", "keyboard", "author", "cookies", "passwd"])
def test_ordinary_keys(key: str) -> None:
    assert not is_secret_key(key)


def test_payloads_are_redacted_recursively() -> None:
    payload = {
        "data": f"echo {OPENAI}\r\n",
        "exitCode": 0,
        "status": None,
        "ratio": 1.5,
        "ok": True,
        "headers": {"Authorization": "anything at all", "accept": "text/plain"},
        "nested": [{"OPENAI_API_KEY": 42}, [f"Bearer {GITHUB}", "x"], ("tuple", f"ghp_{'q' * 20}")],
        "password": {"even": "objects"},
    }
    assert redact_payload(payload) == {
        "data": f"echo {R}\r\n",
        "exitCode": 0,
        "status": None,
        "ratio": 1.5,
        "ok": True,
        "headers": {"Authorization": R, "accept": "text/plain"},
        "nested": [{"OPENAI_API_KEY": R}, [f"Bearer {R}", "x"], ["tuple", R]],
        "password": R,
    }
    assert payload["data"] == f"echo {OPENAI}\r\n"  # the input is not modified


def test_plain_payloads_come_back_equal() -> None:
    payload: Any = {"data": "\x1b[0mhello\r\n", "rows": 24, "list": [1, "two", None]}
    assert redact_payload(payload) == payload
    assert redact_payload("Cookie: x") == R
    assert redact_payload(7) == 7


# extra patterns


def test_extra_patterns_run_after_the_built_ins(logged: list[dict[str, Any]]) -> None:
    redactor = Redactor(["custom-sensitive-[0-9]+", "(unclosed", r"(?i)acme-\w+"])
    assert redactor.text(f"custom-sensitive-1234 ACME-x {OPENAI} plain") == f"{R} {R} {R} plain"
    assert redactor.payload({"a": ["custom-sensitive-9"]}) == {"a": [R]}
    assert [e["pattern"] for e in logged if "pattern" in e] == ["(unclosed"]
    assert redact_text("custom-sensitive-1234") == "custom-sensitive-1234"


def test_redactor_from_home(tmp_path: Path) -> None:
    assert Redactor.from_home(tmp_path).text("custom-sensitive-1") == "custom-sensitive-1"
    (tmp_path / "privacy.toml").write_text('log_retention_days = 41\nextra_patterns = ["custom-sensitive-[0-9]+"]\n')
    assert Redactor.from_home(tmp_path).text("custom-sensitive-1234") == R
    (tmp_path / "privacy.toml").write_text("log_retention_days = 7\n")
    assert Redactor.from_home(tmp_path).text("custom-sensitive-1") == "custom-sensitive-1"


@pytest.mark.parametrize("content", ["extra_patterns = [", 'extra_patterns = "x"', "extra_patterns = [1]"])
def test_malformed_privacy_file_refuses_to_start(tmp_path: Path, content: str) -> None:
    (tmp_path / "privacy.toml").write_text(content)
    with pytest.raises(ValueError, match="privacy.toml"):
        Redactor.from_home(tmp_path)


@pytest.mark.parametrize(
    ("text", "before", "held"),
    [
        ("echo sk-abc", "", "sk-abc"),  # too short yet, but may grow into a key
        (f"key {OPENAI}", "", OPENAI),  # a whole key that may still be growing
        (f"key {OPENAI} done", "", ""),
        ("export OPENAI_API", "", "OPENAI_API"),  # the name of a secret, still being written
        ("Authorization: Bearer abc", "", "Authorization: Bearer abc"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAAAA", "", "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAAAA"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n", "", ""),
        ("open https://example.com/docs", "", "https://example.com/docs"),  # may yet say "internal"
        ("https://internal.example.com/x done", "", ""),
        ("hello world", "", ""),
        ("password is nice", "", "password is nice"),  # in doubt it holds: only for a moment
        ("the password is nice, and then the line went on and on for quite a while longer", "", ""),
        ("xsk-abc", "", ""),  # no match can start inside a word
        ("s", " ", ""),  # a typed echo: too short to hold
        ("\x1b[?25h", "", ""),  # every cursor-show sequence ends in "h"
        ("kie: x", "Coo", ""),  # what was stored already is not held again
    ],
)
def test_settled_holds_back_only_what_may_start_a_secret(text: str, before: str, held: str) -> None:
    assert text[settled(text, before):] == held
