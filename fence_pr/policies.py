"""Retry policies, named for what they retry and until when (tenacity)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

# tenacity imports tornado whenever it is installed, for a coroutine retrier fence_pr never
# uses: a quarter of the agent's start-up. Hidden for that one import.
_HIDE_TORNADO = "tornado" not in sys.modules
if _HIDE_TORNADO:
    sys.modules["tornado"] = None  # type: ignore[assignment]
try:
    from tenacity import (
        RetryCallState,
        Retrying,
        retry_if_exception_type,
        stop_after_attempt,
        wait_exponential,
    )
    from tenacity.stop import stop_base
finally:
    if _HIDE_TORNADO:
        del sys.modules["tornado"]

from .host.budget import Deadline  # noqa: E402
from .pr.errors import TRANSIENT  # noqa: E402

T = TypeVar("T")


BACKOFF = wait_exponential(multiplier=0.05, max=1.0)


class StopBeforeDeadline(stop_base):
    """Stop rather than start a backoff sleep that would end past the deadline.

    tenacity's own stop_before_delay is 8.3+; Debian 12 ships 8.2.1. The backoff depends
    only on the attempt number, so the next sleep can be computed here."""

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        return BACKOFF(retry_state) >= self.deadline.remaining()


def retry_transient(deadline: Deadline, attempts: int = 8) -> Retrying:
    """Retry path failures, ENODEV/ENXIO and EAGAIN with backoff; a reservation conflict,
    I/O error or refusal is final at once.  Never past the deadline."""
    return Retrying(
        retry=retry_if_exception_type(TRANSIENT),
        stop=stop_after_attempt(attempts) | StopBeforeDeadline(deadline),
        wait=BACKOFF,
        reraise=True,
    )


def call_with_retry(deadline: Deadline, fn: Callable[[], T], attempts: int = 8) -> T:
    for attempt in retry_transient(deadline, attempts):
        with attempt:
            return fn()
    raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover
