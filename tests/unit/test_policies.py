"""Retry policy: what is retried, what stops at once, and the deadline."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from fence_pr.host.budget import Deadline
from fence_pr.policies import call_with_retry
from fence_pr.pr.errors import DeviceGone, PathFailure, ReservationConflict


def flaky(failures: list[Exception]):  # type: ignore[no-untyped-def]
    calls = []

    def fn() -> str:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return "done"
    return fn, calls


def test_path_failures_are_retried_until_success() -> None:
    fn, calls = flaky([PathFailure("p", code=0x10000, op="x", device="d"),
                       DeviceGone("g", code=-6, op="x", device="d")])
    assert call_with_retry(Deadline(10), fn) == "done"
    assert len(calls) == 3


def test_reservation_conflict_stops_at_once() -> None:
    fn, calls = flaky([ReservationConflict("c", code=0x18, op="x", device="d")])
    with pytest.raises(ReservationConflict):
        call_with_retry(Deadline(10), fn)
    assert len(calls) == 1


def test_attempts_bound() -> None:
    fn, calls = flaky([PathFailure("p", code=0x10000, op="x", device="d")] * 10)
    with pytest.raises(PathFailure):
        call_with_retry(Deadline(30), fn, attempts=3)
    assert len(calls) == 3


def test_deadline_bounds_retries() -> None:
    fn, calls = flaky([PathFailure("p", code=0x10000, op="x", device="d")] * 1000)
    t = time.monotonic()
    with pytest.raises(PathFailure):
        call_with_retry(Deadline(0.3), fn, attempts=1000)
    assert time.monotonic() - t < 2.0
    assert 1 < len(calls) < 1000


def test_the_engine_imports_no_tenacity_until_a_retry() -> None:
    """tenacity (and the asyncio it imports) stay out of a run whose commands succeed."""
    code = ("import sys, fence_pr.actions, fence_pr.engine;"
            "print(sorted(m for m in ('tenacity', 'asyncio', 'ssl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]", out


def test_a_first_failure_is_the_policys_first_attempt() -> None:
    """The call made before the policy exists counts as its attempt 1: three attempts are
    three calls of fn, not four."""
    fn, calls = flaky([PathFailure("p", code=0x10000, op="x", device="d")] * 3)
    with pytest.raises(PathFailure):
        call_with_retry(Deadline(30), fn, attempts=3)
    assert len(calls) == 3
