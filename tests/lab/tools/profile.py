"""`make profile`: boot the lab once and show where fence_pr's `off` spends its time at 1 and 4
LUNs x 2 paths (tests/lab/tools/profile_guest.py), against the floor every Python agent pays."""

from __future__ import annotations

import sys
from typing import Any

from . import guestrun


def summary(results: list[dict[str, Any]]) -> str:
    """The guest's PROFILE lines as the breakdown docs/bench.md takes."""
    out: list[str] = []
    for r in results:
        n = f"{r.get('luns')} LUN(s)"
        if "floors" in r:
            out.append(f"floors (median), kernel {r.get('kernel')}:")
            out += [f"  {k}: {1000 * v:.0f} ms" for k, v in r["floors"].items()]
        elif "wall" in r:
            out.append(f"{n}: off, untraced, median {1000 * r['wall']:.0f} ms")
        elif "imports" in r:
            out.append(f"{n}: slowest top-level imports (cumulative, exit {r['rc']}):")
            out += [f"  {name}: {1000 * sec:.0f} ms" for name, sec in r["imports"]]
        elif "phases" in r:
            out.append(f"{n}: phases under strace (median of 3):")
            out += [f"  {k}: {v:.0f}" if k == "PR commands" else f"  {k}: {1000 * v:.0f} ms"
                    for k, v in r["phases"].items()]
    return "\n".join(out)


def main() -> int:
    ap = guestrun.parser(__doc__, "1,4", 5)
    a = ap.parse_args()
    got = guestrun.results(
        f".venv/bin/python -m tests.lab.tools.profile_guest --luns {a.luns} --runs {a.runs}",
        a.kernel, "PROFILE", 3600, "profile")
    if got is None:
        return 1
    print(summary(got))
    return 0


if __name__ == "__main__":
    sys.exit(main())
