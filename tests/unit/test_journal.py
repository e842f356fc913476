"""The journal observer: one prefixed line per event, tracebacks line by line, noise left out."""

from __future__ import annotations

import io

from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from coven.journal import format_for_journal, observer


def emit(log_namespace: str, level: LogLevel, **extra: object) -> str:
    stream = io.StringIO()
    Logger(namespace=log_namespace, observer=observer(stream)).emit(level, **extra)
    return stream.getvalue()


def test_info_is_one_line_with_priority_and_namespace_and_no_timestamp() -> None:
    line = emit("coven.ready.ReadyService", LogLevel.info, format="daemon started pid={pid}", pid=7)
    assert line == "<6>coven.ready.ReadyService: daemon started pid=7\n"


def test_levels_map_to_syslog_priorities() -> None:
    assert emit("coven.x", LogLevel.warn, format="w").startswith("<4>")
    assert emit("coven.x", LogLevel.error, format="e").startswith("<3>")
    assert emit("coven.x", LogLevel.critical, format="c").startswith("<2>")


def test_debug_and_conch_chatter_are_left_out() -> None:
    assert emit("coven.x", LogLevel.debug, format="d") == ""
    assert emit("twisted.conch.ssh.transport.SSHServerTransport", LogLevel.error, format="Got remote error") == ""
    assert emit("twisted.conch.ssh.session", LogLevel.critical, format="broken").startswith("<2>")


def test_a_failure_keeps_every_traceback_line_at_the_event_priority() -> None:
    try:
        1 / 0
    except ZeroDivisionError:
        failure = Failure()
    text = format_for_journal({"log_namespace": "coven.store", "log_level": LogLevel.error,
                               "log_format": "pass failed", "log_failure": failure})
    lines = text.splitlines()
    assert lines[0] == "<3>coven.store: pass failed"
    assert len(lines) > 2 and all(line.startswith("<3>coven.store: ") for line in lines)
    assert "ZeroDivisionError" in lines[-1]


def test_legacy_events_get_a_readable_system() -> None:
    text = format_for_journal({"log_namespace": "log_legacy", "log_system": "-", "log_level": LogLevel.info,
                               "log_format": "CovenSite starting on {path}", "path": "/x"})
    assert text == "<6>twisted: CovenSite starting on /x\n"
