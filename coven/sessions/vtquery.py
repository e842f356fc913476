"""Answers the few terminal queries a program blocks on when no terminal is attached.

TUIs such as codex ask for the cursor position or device attributes at start and wait for a
reply; with no real terminal behind the pty they would hang. The daemon answers the four
queries the reference answers and keeps them out of the recorded output (contract B §7.3).
"""

from __future__ import annotations

import re

_QUERY = re.compile(rb"\x1b\[(6n|0?c|5n)")
_REPLIES = {b"6n": b"\x1b[1;1R", b"c": b"\x1b[?62;c", b"0c": b"\x1b[?62;c", b"5n": b"\x1b[0n"}


def answer(data: bytes) -> tuple[bytes, bytes]:
    """Split a pty read into (output to record, replies to write back)."""
    if b"\x1b[" not in data:
        return data, b""
    replies: list[bytes] = []

    def reply(match: re.Match[bytes]) -> bytes:
        replies.append(_REPLIES[match.group(1)])
        return b""

    return _QUERY.sub(reply, data), b"".join(replies)
