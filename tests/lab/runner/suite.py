"""`make lab`: every lab test, in two guests at once (TCG uses one host CPU per guest).

Lane A runs the slowest kernel-independent files on the first kernel; lane B runs the rest
on the first kernel, then each further kernel without the `once` tests.  Each guest boots
once; the output of both is streamed with a lane prefix.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

# What the whole `.ci/run` may take (a lane near it is a lane about to overrun on a slower or
# busier machine), and when the lab gives up on a guest: measured from the start of `make
# lab`, so that a guest that hangs is named in the output before CI's hard kill at 90 min
# (lint, unit tests and setup come first: 4 min on a loaded machine).  It was 3,600 s per
# guest: on 2026-12-06 a machine 1.33x slower than the lab's reference (pace.py, alone)
# and loaded ran lane A for more than that, and the limit turned a slow but green run red.
CI_BUDGET_S = 50 * 60
LAB_DEADLINE_S = 80 * 60

# Lane A's files on the first kernel, chosen so both lanes take about as long (each lane
# prints its 30 slowest tests, and its time at the end); their tests not marked `once`
# (tests/lab/conftest.py) run on the other kernels in lane B.
LANE_A = ["tests/lab/cluster/test_cluster.py", "tests/lab/faults/test_fault_matrix.py",
          "tests/lab/agent/test_watchdog_check.py", "tests/lab/cluster/test_cluster_diagnosis.py",
          "tests/lab/faults/test_reliability.py", "tests/lab/agent/test_agent_nvme.py",
          "tests/lab/faults/test_fault_matrix_nvme.py"]


def lanes(kernels: list[str]) -> dict[str, list[list[str]]]:
    first, rest = kernels[0], kernels[1:]
    b = [["--kernel", first, "tests/lab", *(f"--ignore={f}" for f in LANE_A)]]
    b += [["--kernel", k, "--skip-once"] for k in rest]
    return {"A": [["--kernel", first, *LANE_A]], "B": b}


class Failures:
    """Each failed test of a lane with its first `E ` line, from the "[lab] <nodeid> <when>
    FAILED:" block conftest prints at once: repeated after the lane times, so the end of
    CI's output (all a CI log may keep) names every failure and its cause."""

    def __init__(self, lane: str) -> None:
        self.lane = lane
        self.seen: list[str] = []
        self._open: str | None = None

    def feed(self, line: str) -> None:
        if line.startswith("[lab] FAILED: "):  # run.py: the guest itself failed or hung
            self.seen.append(f"[lab] lane {self.lane}: {line[14:].strip()}")
        elif line.startswith("[lab] ") and line.rstrip().endswith(" FAILED:"):
            self._open = line[6:].rstrip()[:-len(" FAILED:")]
            self.seen.append(f"[lab] lane {self.lane}: {self._open} FAILED")
        elif self._open and line.startswith("E "):
            self.seen[-1] += f": {line[1:].strip()[:400]}"
            self._open = None


def run_lane(name: str, jobs: list[list[str]], results: dict[str, int],
             times: list[str], failures: list[str], deadline: float) -> None:
    rc = 0
    lane_start = time.monotonic()
    for job in jobs:
        t0 = time.monotonic()
        limit = max(60.0, deadline - t0)
        p = subprocess.Popen([sys.executable, "-m", "tests.lab.runner.run",
                              f"--timeout={limit:.0f}", *job],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert p.stdout is not None
        failed = Failures(f"{name}, kernel {job[1]}")
        for line in p.stdout:
            failed.feed(line)
            sys.stdout.write(f"[{name}] {line}")
            sys.stdout.flush()
        job_rc = p.wait()
        failures.extend(failed.seen)
        rc = rc or job_rc
        took = time.monotonic() - t0
        times.append(f"[lab] lane {name}, kernel {job[1]}: {took:.0f}s (it had {limit:.0f}s "
                     f"left before the lab's {LAB_DEADLINE_S // 60} min deadline), exit {job_rc}")
    took = time.monotonic() - lane_start
    times.append(f"[lab] lane {name}: {took:.0f}s, {100 * took / CI_BUDGET_S:.0f}% of CI's "
                 f"{CI_BUDGET_S // 60} min budget for the whole .ci/run")
    results[name] = rc


def main() -> int:
    kernels = sys.argv[1:] or ["7.3", "6.12"]
    results: dict[str, int] = {}
    times: list[str] = []
    failures: list[str] = []
    start = time.monotonic()
    deadline = start + LAB_DEADLINE_S
    threads = [threading.Thread(target=run_lane,
                                args=(n, jobs, results, times, failures, deadline))
               for n, jobs in lanes(kernels).items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("\n".join(sorted(times) + failures), flush=True)
    print(f"[lab] lanes {results}, wall {time.monotonic() - start:.0f}s", flush=True)
    return 0 if results and not any(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
