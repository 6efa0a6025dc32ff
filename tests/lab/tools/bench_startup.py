"""How long `-o metadata` takes: fence_pr as the packages install it, against fence_scsi and
fence_mpath, and the interpreter's own floor; on the host or in the lab guest.

Pacemaker runs `metadata` on every device registration (pacemaker-fenced allows 10 s) and
pcs on every `stonith create`.  Target: fence_pr's median under 25% of fence_scsi's, on
the host and in the guest.  `python -m tests.lab.tools.bench_startup [WHERE]` prints the
figures of the machine it runs on; `make bench` prints the host's and (bench_guest.py) the
guest's with the same code, and `make bench-startup` both, without the LUN runs.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..fixtures.packaged import install

TARGET = 0.25  # of fence_scsi's median
# What every agent built on fencing.py pays before its own code runs: the interpreter and the
# imports fencing.py forces (issue 17's floor for a 1-LUN `off`).
FENCING_FLOOR = "import sys; sys.path.append('/usr/share/fence'); import fencing"
FLOOR = "python3 + fencing.py (floor)"


def startup(argv: list[str], runs: int = 5) -> float:
    """Median wall time of `argv`, after one run that is not counted (the page cache)."""
    times = []
    for i in range(runs + 1):
        t0 = time.monotonic()
        subprocess.run(argv, capture_output=True, check=False)
        if i:
            times.append(time.monotonic() - t0)
    return statistics.median(times)


def figures(installed: Path, runs: int = 5) -> dict[str, float]:
    """Medians of `-o metadata` for each agent, and the floors to read them against."""
    out = {
        "fence_pr": startup([str(installed), "-o", "metadata"], runs),
        "fence_scsi": startup(["/usr/sbin/fence_scsi", "-o", "metadata"], runs),
        "fence_mpath": startup(["/usr/sbin/fence_mpath", "-o", "metadata"], runs),
        "python3 -S (floor)": startup(["/usr/bin/python3", "-S", "-c", "pass"], runs),
        "python3 (with site)": startup(["/usr/bin/python3", "-c", "pass"], runs),
        FLOOR: startup(["/usr/bin/python3", "-c", FENCING_FLOOR], runs),
    }
    venv_agent = Path(sys.executable).parent / "fence_pr"
    if venv_agent.exists():
        out["fence_pr (checkout's venv)"] = startup([str(venv_agent), "-o", "metadata"], runs)
    return out


def report(where: str, fig: dict[str, float]) -> str:
    ratio = fig["fence_pr"] / fig["fence_scsi"]
    lines = [f"-o metadata on the {where}, median of 5:"]
    lines += [f"  {name}: {s * 1000:.1f} ms" for name, s in fig.items()]
    lines.append(f"  fence_pr / fence_scsi = {100 * ratio:.0f}% (target under "
                 f"{100 * TARGET:.0f}%: {'met' if ratio < TARGET else 'NOT met'})")
    return "\n".join(lines)


def main() -> int:
    where = sys.argv[1] if len(sys.argv) > 1 else "host"
    with tempfile.TemporaryDirectory(prefix="fence_pr-startup-") as tmp:
        fig = figures(install(Path(tmp)))
    print(report(where, fig))
    print("STARTUP " + json.dumps({where: fig}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
