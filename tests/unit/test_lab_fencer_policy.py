"""The lab's one policy for a Pacemaker 2.1.5 fencer that went on without the CIB: restarted
once, said as a LabNotice, a failure the second time (tests/lab/fixtures/cluster.py)."""

from __future__ import annotations

import pytest

from tests.lab.fixtures.cluster import LabNotice, restart_fencer_once


class Fencer:
    """A node whose fencer settles in the states given, one per wait."""

    def __init__(self, *states: str) -> None:
        self.states = list(states)
        self.restarts = 0

    def settled(self) -> str:
        return self.states.pop(0)

    def restart(self) -> None:
        self.restarts += 1


def test_a_fencer_that_registered_is_left_alone() -> None:
    f = Fencer("ok")
    restart_fencer_once("node1", f.settled, f.restart, RuntimeError)
    assert f.restarts == 0


def test_a_fencer_without_the_cib_is_restarted_once_and_the_run_says_so() -> None:
    f = Fencer("without the CIB: 'Could not connect'", "ok")
    with pytest.warns(LabNotice, match="pacemaker-fenced on node2 went on without the CIB"):
        restart_fencer_once("node2", f.settled, f.restart, RuntimeError)
    assert (f.restarts, f.states) == (1, [])


def test_the_same_again_after_the_restart_is_a_failure_naming_it() -> None:
    f = Fencer("without the CIB: 'a'", "without the CIB: 'b'", "ok")
    with pytest.warns(LabNotice), pytest.raises(RuntimeError, match="without the CIB: 'b'"):
        restart_fencer_once("node2", f.settled, f.restart, RuntimeError)
    assert (f.restarts, f.states) == (1, ["ok"])
