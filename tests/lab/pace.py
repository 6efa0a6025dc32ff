"""How fast the lab guest runs right now, so that waits scale with it.

Under TCG the guest is one host thread: another guest or a CPU-bound job beside it on a
2-core machine slows everything inside by a factor that no fixed timeout foresees.  What
the lab waits for (Pacemaker starting, an agent importing its modules, corosync's token)
is start-up of programs and CPU work, so the pace is measured with exactly that: start a
Python interpreter that does a fixed piece of work, best of a few.  Every wait in the lab
(topology.wait_for, the cluster's) is its nominal time times `factor()`, measured again
when a wait runs out, so a guest that became slower in the middle of a run gets its due.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

# The workload's time in a lab guest alone on the project's 2-core machine (QEMU TCG,
# kernel 7.3; 0.23 s measured): the pace at which the nominal timeouts were set.
# `python -m tests.lab.vm '.venv/bin/python -m tests.lab.pace'` measures it anew.
REFERENCE_S = 0.25
WORKLOAD = "sum(i * i for i in range(200000))"
RUNS = 3

_factor: float | None = None


def measure() -> float:
    """Seconds for the workload, best of RUNS: the guest's speed, not one unlucky tick."""
    best = float("inf")
    for _ in range(RUNS):
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-S", "-c", WORKLOAD], check=True)
        best = min(best, time.monotonic() - t0)
    return best


def factor(refresh: bool = False) -> float:
    """How many times slower than the reference the guest is (never below 1: the nominal
    times are the floor).  Outside the lab, 1."""
    global _factor
    if os.environ.get("FENCE_PR_LAB") != "1":
        return 1.0
    if _factor is None or refresh:
        _factor = max(1.0, measure() / REFERENCE_S)
    return _factor


def scaled(seconds: float) -> float:
    return seconds * factor()


if __name__ == "__main__":
    t = measure()
    print(f"pace workload {t:.3f}s (reference {REFERENCE_S}s): factor "
          f"{max(1.0, t / REFERENCE_S):.2f}")
