"""AsyncMultiService: ordered starts that wait, reverse stops that wait, no lost errors."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.application.service import Service
from twisted.internet.defer import Deferred

from coven.multiservice import AsyncMultiService


class Child(Service):
    def __init__(self, name: str, journal: list[str], start: Any = None, stop: Any = None) -> None:
        self.setName(name)
        self._journal = journal
        self._start = start
        self._stop = stop

    def startService(self) -> Any:
        super().startService()
        self._journal.append(f"start {self.name}")
        if isinstance(self._start, BaseException):
            raise self._start
        return self._start

    def stopService(self) -> Any:
        super().stopService()
        self._journal.append(f"stop {self.name}")
        if isinstance(self._stop, BaseException):
            raise self._stop
        return self._stop


def parent_of(*children: Child) -> AsyncMultiService:
    parent = AsyncMultiService()
    for child in children:
        child.setServiceParent(parent)
    return parent


def test_starts_in_order_each_after_the_previous_finished() -> None:
    journal: list[str] = []
    slow: Deferred = Deferred()
    parent = parent_of(Child("a", journal), Child("b", journal, start=slow), Child("c", journal))
    outcome: list[Any] = []
    parent.startService().addBoth(outcome.append)
    assert journal == ["start a", "start b"] and outcome == []
    slow.callback(None)
    assert journal == ["start a", "start b", "start c"] and outcome == [None]


def test_a_synchronous_start_failure_raises_to_the_runner() -> None:
    journal: list[str] = []
    parent = parent_of(Child("a", journal), Child("b", journal, start=SystemExit("refused")), Child("c", journal))
    with pytest.raises(SystemExit, match="refused"):
        parent.startService()
    assert journal == ["start a", "start b"]


def test_an_asynchronous_start_failure_is_logged_and_fails_the_start(logged: list[dict[str, Any]]) -> None:
    journal: list[str] = []
    slow: Deferred = Deferred()
    parent = parent_of(Child("a", journal, start=slow), Child("b", journal))
    started = parent.startService()
    slow.errback(RuntimeError("late"))
    failures: list[Any] = []
    started.addErrback(failures.append)
    assert journal == ["start a"]
    assert failures[0].check(RuntimeError)
    assert any(event.get("log_failure") is failures[0] for event in logged)


def test_stops_in_reverse_waiting_and_reports_the_first_error(logged: list[dict[str, Any]]) -> None:
    journal: list[str] = []
    slow: Deferred = Deferred()
    parent = parent_of(Child("a", journal), Child("b", journal, stop=ValueError("b broke")),
                       Child("c", journal, stop=slow))
    parent.startService()
    journal.clear()
    outcome: list[Any] = []
    parent.stopService().addBoth(outcome.append)
    assert journal == ["stop c"] and outcome == []
    slow.callback(None)
    assert journal == ["stop c", "stop b", "stop a"]
    assert outcome[0].check(ValueError)
    assert any("log_failure" in event and event.get("name") == "b" for event in logged)
