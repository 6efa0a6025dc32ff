"""One budget for a run: power_timeout, from the agent's first step to its last.

Made before anything is looked up, so discovery (corosync-cmapctl, dmsetup, vgs, udev)
spends from it like the PR commands do; every subprocess and every SG_IO or NVMe
passthrough command takes its timeout from what is left.  The child process of
bounded.py is the one hard wall around it all: a command stuck in the kernel ignores
timeouts.
"""

from __future__ import annotations

import time

# Never hand a command a timeout of 0: to SG_IO and NVMe passthrough 0 means "the kernel's
# default" (60 s / 30 s), and a subprocess given 0 is killed before it starts.
MIN_S = 0.1


class Deadline:
    """The fencer's budget (power_timeout) for the whole action, shared by every step."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def expired(self) -> bool:
        return self.remaining() <= 0

    def timeout_s(self, cap: float | None = None) -> float:
        """A subprocess's timeout: what is left of the budget (at most `cap`)."""
        left = max(MIN_S, self.remaining())
        return min(left, cap) if cap is not None else left

    def timeout_ms(self) -> int:
        """A SCSI or NVMe command's timeout, in the kernel's unit."""
        return int(self.timeout_s() * 1000)
