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

# The slowest files, all marked `once` (tests/lab/conftest.py): about half the first
# kernel's time.
LANE_A = ["tests/lab/test_cluster.py", "tests/lab/test_fault_matrix.py",
          "tests/lab/test_watchdog_check.py", "tests/lab/test_peers.py",
          "tests/lab/test_cluster3.py"]


def lanes(kernels: list[str]) -> dict[str, list[list[str]]]:
    first, rest = kernels[0], kernels[1:]
    b = [["--kernel", first, "tests/lab", *(f"--ignore={f}" for f in LANE_A)]]
    b += [["--kernel", k, "--skip-once"] for k in rest]
    return {"A": [["--kernel", first, *LANE_A]], "B": b}


def run_lane(name: str, jobs: list[list[str]], results: dict[str, int]) -> None:
    rc = 0
    for job in jobs:
        p = subprocess.Popen([sys.executable, "-m", "tests.lab.run", *job],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert p.stdout is not None
        for line in p.stdout:
            sys.stdout.write(f"[{name}] {line}")
            sys.stdout.flush()
        rc = rc or p.wait()
    results[name] = rc


def main() -> int:
    kernels = sys.argv[1:] or ["7.3", "6.12"]
    results: dict[str, int] = {}
    start = time.monotonic()
    threads = [threading.Thread(target=run_lane, args=(n, jobs, results))
               for n, jobs in lanes(kernels).items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"[lab] lanes {results}, wall {time.monotonic() - start:.0f}s", flush=True)
    return 0 if results and not any(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
