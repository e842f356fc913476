"""Secrets never reach the store: every event payload is redacted first (contract B §7.4).

This runs on the reactor thread for every output chunk, so its cost matters as much as its
patterns. The built-in patterns are the reference's (privacy.rs ``built_in_patterns``), joined
into one alternation and applied in a single leftmost-first pass — where the reference makes
one pass per pattern, this differs only in how two overlapping redactions merge.

Python's regex engine has no literal prefilter for an alternation that starts with ``\\b`` and
case-insensitive words: ``sub`` would try a match at every position, about 10 ms per 64 KiB.
Every built-in match, though, contains a lowercase *trigger* literal at a known distance from
its start ("sk-", "token", "authorization", …). So the text is lowercased once, the triggers
are found by compiled literal searches (C speed), and the combined pattern is tried only where
a match could start. Trying a superset of the possible starts in ascending order, skipping those
inside the previous match, gives exactly what a full ``sub`` gives.

A pty hands output over in reads of any size, so a secret can arrive in two. ``settled`` finds
a tail that may be the start of one, and the session holds that tail back until the next read
settles it.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from twisted.logger import Logger

REDACTED = "[REDACTED]"

log = Logger()

BUILT_IN_PATTERNS = (
    r"(?is:-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?-----END [A-Z0-9 ]*PRIVATE KEY-----)",
    r"(?i:\bAuthorization\s*:\s*(?:Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+)",
    r"(?i:\b(?:Cookie|Set-Cookie)\s*:\s*[^\r\n]+)",
    r"""(?i:\b(?:OPENAI_API_KEY|ANTHROPIC_API_KEY|GITHUB_TOKEN|GH_TOKEN|API[_-]?KEY|ACCESS[_-]?TOKEN"""
    r"""|REFRESH[_-]?TOKEN|AUTH[_-]?TOKEN|SECRET|PASSWORD|PRIVATE[_-]?KEY)\s*=\s*["']?[^"'\s]+)""",
    r"""(?i:\b(?:api[_-]?key|access[_-]?token|refresh[_-]?token|auth[_-]?token|secret|password"""
    r"""|private[_-]?key)\s*[:=]\s*["']?[^"',\s}]+)""",
    r"\bsk-ant-[A-Za-z0-9_-]{20,}\b",
    r"\bsk-[A-Za-z0-9]{20,}\b",
    r"\bgh[pousr]_[A-Za-z0-9_]{20,}\b",
    r"\bgithub_pat_[A-Za-z0-9_]{20,}\b",
    r"""(?i:https?://[^\s"']*(?:gateway|private|internal)[^\s"']*)""",
    r"""(?i:[?&](?:token|key|secret|api_key|access_token)=[^&\s"']+)""",
)

PATTERN = re.compile("|".join(BUILT_IN_PATTERNS))

# trigger -> the lowercase text that may stand between a match's start and the trigger.
# Derived pattern by pattern above; the property test checks the result against PATTERN.sub.
_TRIGGERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("-----begin", ("",)),
    ("authorization", ("",)),
    ("cookie", ("", "set-")),
    ("password", ("",)),
    ("secret", ("", "?", "&")),
    ("sk-", ("",)),
    ("github_pat_", ("",)),
    ("http", ("",)),
    (
        "key",
        ("?", "&", "?api_", "&api_", "api", "api_", "api-", "private", "private_", "private-",
         "openai_api_", "anthropic_api_"),
    ),
    (
        "token",
        ("?", "&", "?access_", "&access_", "gh_", "github_", "auth", "auth_", "auth-", "access",
         "access_", "access-", "refresh", "refresh_", "refresh-"),
    ),
)
# Compiled literal searches: for short needles sre's prefix scan beats str.find by 2-3x.
_FINDERS = tuple((re.compile(re.escape(trigger)), prefixes) for trigger, prefixes in _TRIGGERS) + (
    (re.compile(r"gh[pousr]_"), ("",)),
)

_SECRET_KEY_EXACT = frozenset({"authorization", "cookie", "set_cookie", "token"})
_SECRET_KEY_PARTS = (
    "api_key", "apikey", "access_token", "refresh_token", "auth_token", "github_token",
    "private_key", "password", "secret",
)


def is_secret_key(name: str) -> bool:
    """Object keys whose whole value is withheld, however harmless it looks (privacy.rs)."""
    normalized = name.lower().replace("-", "_")
    return (
        normalized in _SECRET_KEY_EXACT
        or normalized.endswith("_token")
        or any(part in normalized for part in _SECRET_KEY_PARTS)
    )


def _match_starts(text: str) -> list[int] | None:
    """Every position where a built-in match may start, ascending; None to scan it all.

    Text dense with triggers ("keykeykey…") is cheaper to scan plainly than hit by hit.
    """
    low = text.lower()
    # "İ" lowercases to two characters, so positions would shift; "ı" and "ſ" stay as they are,
    # yet IGNORECASE matches them as i and s. Either way the triggers cannot be trusted.
    if len(low) != len(text) or "\u0131" in text or "\u017f" in text:
        return None
    budget = len(text) // 64 + 16
    starts: set[int] = set()
    for finder, prefixes in _FINDERS:
        for hit in finder.finditer(low):
            budget -= 1
            if budget < 0:
                return None
            at = hit.start()
            starts.update(at - len(prefix) for prefix in prefixes if low.endswith(prefix, 0, at))
    return sorted(starts)


def _redact_built_in(text: str) -> str:
    starts = _match_starts(text)
    if starts is None:
        return PATTERN.sub(REDACTED, text)
    pieces: list[str] = []
    done = 0
    for start in starts:
        if start < done:
            continue
        match = PATTERN.match(text, start)
        if match is not None:
            pieces += (text[done:start], REDACTED)
            done = match.end()
    if not pieces:
        return text
    pieces.append(text[done:])
    return "".join(pieces)


# How far back an unsettled secret may start: one on the last line (none of them spans a line
# break but a private key), and an unfinished private-key block.
LINE_REACH = 4096
KEY_REACH = 16384
# An unfinished match with a space in it ("Authorization: Bearer ") is at most this far back.
NEAR = 64
# Text dense with triggers is scanned in full (as redaction does), so only this far back.
DENSE_REACH = 256
# A shorter beginning ("s", "ht") is too common to hold back: it ends every cursor-show sequence.
MIN_PARTIAL = 3
_PEM_END = re.compile(r"(?i)-----END [A-Z0-9 ]*-----")
_WORD = re.compile(r"\w")
_SPACE = re.compile(r"\s")
# Each lowercase beginning (of MIN_PARTIAL characters or more) of the text a match opens with.
_OPENINGS = frozenset(
    opening[:end]
    for trigger, prefixes in _TRIGGERS + tuple((f"gh{kind}_", ("",)) for kind in "pousr")
    for opening in (prefix + trigger for prefix in prefixes)
    for end in range(MIN_PARTIAL, len(opening) + 1)
)
_LONGEST_OPENING = max(map(len, _OPENINGS))


def settled(text: str, before: str = "") -> int:
    """How much of ``text`` can be redacted and stored now.

    What follows may be the start of a secret that the next read completes or lengthens
    ("… sk-ab" then "cdef…"); redacting the two halves apart would store both in the clear,
    so that tail waits for more output. ``before`` is the text stored just before, so word
    boundaries are judged as in the whole stream. When in doubt it holds: a held tail only
    waits a moment, a split secret is stored for good.
    """
    whole = before + text
    end = len(whole)
    first = len(before)
    line = max(first, whole.rfind("\n", first) + 1, end - LINE_REACH)
    reach = max(first, end - KEY_REACH)
    begin = max(whole.rfind("-----BEGIN", reach), whole.rfind("-----begin", reach))
    if begin >= 0:
        block = PATTERN.match(whole, begin)
        if block is not None:
            line = max(line, block.end())  # its closing dashes open nothing
        elif not _PEM_END.search(whole, begin):
            return begin - first  # a private key still being written
    # Matches are taken leftmost-first, as redaction takes them; the last may run to the end,
    # or a possible start may not have become a match yet.
    starts = _match_starts(whole[line:])
    if starts is None:  # dense with triggers: a full scan, but only of the last stretch
        candidates: Iterable[int] = (m.start() for m in PATTERN.finditer(whole, max(line, end - DENSE_REACH)))
    else:
        candidates = (line + start for start in starts)
    done = line
    for start in candidates:
        if start < done:
            continue
        match = PATTERN.match(whole, start)
        if match is not None and match.end() < end:
            done = match.end()
        elif end - start >= MIN_PARTIAL and _may_open(whole, start) and (
            match is not None or end - start <= NEAR or not _SPACE.search(whole, start)
        ):
            return start - first
    tail = whole[max(done, end - _LONGEST_OPENING):].lower()
    for size in range(len(tail), MIN_PARTIAL - 1, -1):
        if tail[-size:] in _OPENINGS and _may_open(whole, end - size):
            return end - size - first
    return len(text)


def _may_open(text: str, start: int) -> bool:
    """A match may begin at ``start``: a word-led one (``\\b``; all but "http", "?", "&", "-----")
    only where no word character comes before it."""
    if start == 0 or not text[start].isalpha() or "http".startswith(text[start:start + 4].lower()):
        return True
    return not _WORD.match(text, start - 1)


class Redactor:
    """The built-in rules plus a user's ``extra_patterns`` (Python regex syntax).

    Extra patterns run as a plain ``sub`` over every string after the built-ins, so each one
    costs a full scan per output chunk; an invalid one is skipped with a logged reason.
    """

    def __init__(self, extra_patterns: Iterable[str] = ()) -> None:
        self._extra: list[re.Pattern[str]] = []
        for source in extra_patterns:
            try:
                self._extra.append(re.compile(source))
            except re.error as e:
                log.warn("ignoring privacy extra pattern {pattern!r}: {error}", pattern=source, error=str(e))

    @classmethod
    def from_home(cls, home: Path) -> Redactor:
        """Read ``extra_patterns`` from ``<home>/privacy.toml``; a missing file means none.

        A file that exists but cannot be read or parsed raises ``ValueError``: starting without
        the user's own rules would store what they asked to withhold.
        """
        path = home / "privacy.toml"
        try:
            with path.open("rb") as f:
                settings = tomllib.load(f)
        except FileNotFoundError:
            return cls()
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"failed to read {path}: {e}") from e
        patterns = settings.get("extra_patterns", [])
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise ValueError(f"{path}: extra_patterns must be a list of strings")
        return cls(patterns)

    def text(self, text: str) -> str:
        text = _redact_built_in(text)
        for pattern in self._extra:
            text = pattern.sub(REDACTED, text)
        return text

    def payload(self, value: Any) -> Any:
        """A copy of a JSON-shaped value with secret keys withheld and every string redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                key: REDACTED if isinstance(key, str) and is_secret_key(key) else self.payload(item)
                for key, item in value.items()
            }
        if isinstance(value, (list, tuple)):
            return [self.payload(item) for item in value]
        return value


DEFAULT = Redactor()


def redact_text(text: str) -> str:
    return DEFAULT.text(text)


def redact_payload(value: Any) -> Any:
    return DEFAULT.payload(value)
