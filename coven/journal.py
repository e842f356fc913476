"""The log observer for the systemd journal: ``twistd --logger coven.journal.observer``.

The journal stamps each line with its own time, so lines carry no timestamp; each starts with
an sd-daemon priority prefix (``<6>`` info, ``<4>`` warning, ``<3>`` error), which journald
strips and files as the entry's priority, so ``journalctl -p warning`` finds the trouble. One
event is one line, except a traceback, whose lines each carry the event's priority. Debug
events, and the SSH library's chatter under the manhole (which logs its own lines), are left
out.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
)
from zope.interface import implementer

PRIORITY = {
    LogLevel.debug: 7,
    LogLevel.info: 6,
    LogLevel.warn: 4,
    LogLevel.error: 3,
    LogLevel.critical: 2,
}


def format_for_journal(event: dict[str, Any]) -> str:
    """``<P>system: text`` plus the traceback of a logged failure, every line prefixed."""
    priority = PRIORITY.get(event.get("log_level", LogLevel.info), 6)
    system = event.get("log_system")
    if not system or system == "-":
        namespace = event.get("log_namespace") or "-"
        system = "twisted" if namespace == "log_legacy" else namespace
    text = formatEvent(event)
    failure = event.get("log_failure")
    if failure is not None:
        text = f"{text}\n{failure.getTraceback().rstrip()}"
    return "".join(f"<{priority}>{system}: {line}\n" for line in text.splitlines() or [""])


@implementer(ILogObserver)
class JournalObserver:
    """Writes each event as journal-ready lines to a text stream (stdout under systemd)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def __call__(self, event: dict[str, Any]) -> None:
        self._stream.write(format_for_journal(event))
        self._stream.flush()


def observer(stream: IO[str] | None = None) -> ILogObserver:
    """The factory twistd's ``--logger`` calls: info and up, conch only when critical."""
    levels = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
    levels.setLogLevelForNamespace("twisted.conch", LogLevel.critical)
    return FilteringLogObserver(JournalObserver(stream if stream is not None else sys.stdout), [levels])
