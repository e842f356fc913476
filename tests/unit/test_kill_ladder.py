"""The kill ladder on a fake clock: which signals, to whom, when."""

import signal

import pytest

from twisted.internet.task import Clock

from coven.sessions.ladder import KillLadder
from tests.unit.fakes import FakeHandle


def ladder(handle, hup=1.0, term=5.0):
    clock = Clock()
    handle.clock = clock
    return clock, KillLadder(clock, handle, hup, term, "s1")


def test_stubborn_group_gets_hup_then_term_then_kill_at_the_graces():
    handle = FakeHandle(dies_on=frozenset({signal.SIGKILL}))
    clock, kill = ladder(handle)
    done = kill.start()
    clock.advance(0.999)
    assert handle.signals == [(0.0, signal.SIGHUP)]
    clock.advance(0.001)
    assert handle.signals[-1] == (1.0, signal.SIGTERM)
    clock.advance(4.999)
    assert len(handle.signals) == 2
    clock.advance(0.001)
    assert handle.signals[-1] == (6.0, signal.SIGKILL)
    assert done.called
    assert clock.getDelayedCalls() == []


def test_group_that_obeys_hup_gets_nothing_more():
    handle = FakeHandle(dies_on=frozenset({signal.SIGHUP}))
    clock, kill = ladder(handle)
    done = kill.start()
    clock.advance(1.0)
    assert [s for _, s in handle.signals] == [signal.SIGHUP]
    assert done.called
    assert clock.getDelayedCalls() == []


def test_poke_after_the_group_is_gone_ends_early():
    handle = FakeHandle()
    clock, kill = ladder(handle)
    done = kill.start()
    handle.alive = False
    kill.poke()
    assert done.called
    assert clock.getDelayedCalls() == []


def test_poke_while_grandchildren_remain_keeps_climbing():
    handle = FakeHandle(dies_on=frozenset({signal.SIGTERM}))
    clock, kill = ladder(handle, hup=0.5, term=2.0)
    done = kill.start()
    kill.poke()  # the child exited, but its group still has members
    assert not done.called
    clock.advance(0.5)
    assert [s for _, s in handle.signals] == [signal.SIGHUP, signal.SIGTERM]
    clock.advance(2.0)  # the SIGKILL rung finds the group empty and sends nothing
    assert [s for _, s in handle.signals] == [signal.SIGHUP, signal.SIGTERM]
    assert done.called


def test_graces_are_configurable():
    handle = FakeHandle(dies_on=frozenset({signal.SIGKILL}))
    clock, kill = ladder(handle, hup=0.1, term=0.2)
    kill.start()
    clock.advance(0.1)
    clock.advance(0.2)
    assert [t for t, _ in handle.signals] == pytest.approx([0.0, 0.1, 0.3])
