"""Retry policies, named for what they retry and until when (tenacity).

tenacity is imported at a command's first transient failure, not before: an `off` whose
commands all succeed (the usual case) never needs it, and tenacity 8.2 imports asyncio (and
with it ssl) for a coroutine retrier fence_pr never uses: under TCG that was most of
fence_pr.actions' import (624 ms before, 136 ms after; docs/bench.md, the profile)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from .host.budget import Deadline
from .pr.errors import TRANSIENT

if TYPE_CHECKING:
    from tenacity import RetryCallState, Retrying

T = TypeVar("T")


def retry_transient(deadline: Deadline, attempts: int = 8) -> Retrying:
    """Retry path failures, ENODEV/ENXIO and EAGAIN with backoff; a reservation conflict,
    I/O error or refusal is final at once.  Never past the deadline."""
    # tenacity imports tornado whenever it is installed, for a coroutine retrier fence_pr
    # never uses: hidden for that one import.
    hide_tornado = "tornado" not in sys.modules
    if hide_tornado:
        sys.modules["tornado"] = None  # type: ignore[assignment]
    try:
        from tenacity import (
            Retrying,
            retry_if_exception_type,
            stop_after_attempt,
            wait_exponential,
        )
    finally:
        if hide_tornado:
            del sys.modules["tornado"]
    from tenacity.stop import stop_base

    backoff = wait_exponential(multiplier=0.05, max=1.0)

    class StopBeforeDeadline(stop_base):
        """Stop rather than start a backoff sleep that would end past the deadline.
        (tenacity's own stop_before_delay is 8.3+; Debian 12 ships 8.2.1.)  The backoff
        depends only on the attempt number, so the next sleep can be computed here."""

        def __call__(self, retry_state: RetryCallState) -> bool:
            return backoff(retry_state) >= deadline.remaining()

    return Retrying(
        retry=retry_if_exception_type(TRANSIENT),
        stop=stop_after_attempt(attempts) | StopBeforeDeadline(),
        wait=backoff,
        reraise=True,
    )


def call_with_retry(deadline: Deadline, fn: Callable[[], T], attempts: int = 8) -> T:
    """fn() under retry_transient.  The first call is made before the policy exists; if it
    fails transiently, the policy takes over with that failure as its attempt 1, so what is
    retried, the backoff and the bounds are the policy's exactly."""
    try:
        return fn()
    except TRANSIENT as e:
        first: list[BaseException] = [e]

    def replay() -> T:
        if first:
            raise first.pop()
        return fn()

    for attempt in retry_transient(deadline, attempts):
        with attempt:
            return replay()
    raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover
