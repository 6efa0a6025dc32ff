"""`make bench-cluster`: fencing as Pacemaker times it, fence_pr beside fence_scsi and
fence_mpath in the lab's two-node cluster (tests/lab/tools/bench_cluster_guest.py); the
table goes into docs/bench.md (from docs/bench-cluster.json)."""

from __future__ import annotations

import json
import sys
from typing import Any

from . import guestrun
from .bench import AGENTS, CLUSTER_RAW, RAW, cluster_table, write_doc


def merged(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A run of some agents and sizes replaces those rows of the last one."""
    done = {(r["agent"], r["luns"]) for r in new}
    return new + [r for r in old if (r["agent"], r["luns"]) not in done]


def main() -> int:
    ap = guestrun.parser(__doc__, "1,4", 5)
    ap.add_argument("--agents", default=",".join(AGENTS))
    a = ap.parse_args()
    got = guestrun.results(
        f".venv/bin/python -m tests.lab.tools.bench_cluster_guest --luns {a.luns} "
        f"--runs {a.runs} --agents {a.agents}", a.kernel, "CLUSTER", 6 * 3600, "bench-cluster")
    if got is None:
        return 1
    old = json.loads(CLUSTER_RAW.read_text())["results"] if CLUSTER_RAW.exists() else []
    rows = merged(old, got)
    CLUSTER_RAW.write_text(json.dumps({"results": rows}, indent=1) + "\n")
    print(cluster_table(rows))
    if RAW.exists():
        last = json.loads(RAW.read_text())
        write_doc(last["results"], a.kernel, float(last["host_s"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
