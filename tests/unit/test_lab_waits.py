"""The lab's waits leave the CPU to what they wait for (tests/lab/fixtures/topology.py).

A look that runs programs (crm_mon on every node) is followed by a rest twice as long, so
the waiter takes at most a third of the lab guest's one CPU; a cheap look keeps its short
interval.  Outside the lab the pace factor is 1, so these run on the host.
"""

from __future__ import annotations

import itertools
import statistics
import time

import pytest

from tests.lab.fixtures.topology import POLL_REST, wait_for


def looks_at(look_s: float, looks: int, interval: float) -> list[float]:
    """The start times of `looks` looks that each take `look_s`, the last one true."""
    starts: list[float] = []

    def pred() -> bool:
        starts.append(time.monotonic())
        time.sleep(look_s)
        return len(starts) >= looks

    wait_for(pred, "the test's looks", timeout=60, interval=interval)
    return starts


def test_an_expensive_look_is_followed_by_a_longer_rest() -> None:
    starts = looks_at(0.2, 3, interval=0.01)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # each gap is the look (0.2 s) and its rest (POLL_REST x 0.2 s)
    assert all(g >= 0.2 * (1 + POLL_REST) for g in gaps), gaps


def test_a_cheap_look_keeps_its_interval() -> None:
    starts = looks_at(0.0, 5, interval=0.05)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # the median: one late wake-up of a loaded machine is not what is tested
    assert min(gaps) >= 0.05 and statistics.median(gaps) < 0.5, gaps


def test_a_wait_that_runs_out_says_what_was_not_there() -> None:
    with pytest.raises(TimeoutError, match="waiting for the moon"):
        wait_for(lambda: False, "the moon", timeout=0.2, interval=0.05)
