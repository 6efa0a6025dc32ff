"""Guest side of `make profile`: where the time of fence_pr's `off` goes, at 1 and 4 LUNs x 2
paths (issue 17, part 1).  Three views of the same action, each its own runs:

- wall time, untraced, median of `--runs`, beside the floors every Python agent pays: the
  interpreter (`python3 -S -c pass`, with site) and the imports fencing.py forces;
- `PYTHONPROFILEIMPORTTIME=1`: each top-level import's cumulative time, in the parent and
  in the deadline child (the child's stderr goes through the parent);
- `strace -f --seccomp-bpf` of execve, clone, flock, ioctl and exit_group only (so the rest
  of the process runs untraced): the phases between the agent's start, the fork of its
  deadline child, the lock, the first and last PR command, the child's exit and the
  parent's.

One result per line, `PROFILE {json}`, then a readable summary.  iSCSI LUNs, as `make bench`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# linux/pr.h's ioctls are type 'p' (0x70), numbers 0xc8 (REGISTER) to 0xcf (READ
# RESERVATION); strace names them IOC_PR_* or prints them raw.  SG_IO and the NVMe
# passthrough are the fallbacks' commands.
PR_IOCTL = re.compile(r"IOC_PR_|_IOC\([^)]*0x70, 0xc[89a-f]|SG_IO|0x2285|NVME_IOCTL")
LINE = re.compile(r"^(?P<pid>\d+)\s+(?P<t>\d+\.\d+) (?P<rest>.*)$")
DURATION = re.compile(r"<(?P<d>\d+\.\d+)>$")


def emit(**kw: object) -> None:
    print("PROFILE " + json.dumps(kw), flush=True)


@dataclass
class Call:
    pid: int
    name: str
    args: str
    start: float
    end: float
    ret: str = ""


@dataclass
class Trace:
    calls: list[Call] = field(default_factory=list)


def parse_strace(text: str) -> Trace:
    """strace -f -ttt -T output as calls with start and end times; an `<unfinished ...>`
    call is joined with its `<... name resumed>` line."""
    trace = Trace()
    pending: dict[int, tuple[str, str, float]] = {}
    for line in text.splitlines():
        m = LINE.match(line.strip())
        if not m:
            continue
        pid, t, rest = int(m["pid"]), float(m["t"]), m["rest"]
        d = DURATION.search(rest)
        if rest.endswith("<unfinished ...>"):
            name, _, args = rest.partition("(")
            pending[pid] = (name, args, t)
            continue
        if rest.startswith("<... "):
            name = rest[5:].split(" ", 1)[0]
            pname, args, start = pending.pop(pid, (name, "", t))
            ret = rest.rsplit("= ", 1)[-1].split(" ")[0] if "= " in rest else ""
            # -T's figure on a resumed line is the whole call's, from its start.
            trace.calls.append(Call(pid, pname, args, start, start + float(d["d"]) if d else t,
                                    ret))
            continue
        if rest.startswith("+++") or rest.startswith("---"):
            continue
        name, _, args = rest.partition("(")
        ret = rest.rsplit("= ", 1)[-1].split(" ")[0] if "= " in rest else ""
        trace.calls.append(Call(pid, name, args, t, t + (float(d["d"]) if d else 0.0), ret))
    return trace


def phases(trace: Trace) -> dict[str, float]:
    """Seconds between the agent's landmarks (see the module's docstring); a landmark the
    trace lacks is left out, and so is every phase that needs it."""
    calls = sorted(trace.calls, key=lambda c: c.start)
    execs = [c for c in calls if c.name == "execve" and c.ret == "0"]
    if not execs:
        return {}
    main, start = execs[0].pid, execs[0].start  # the agent's exec, strace's child
    forks = [c for c in calls if c.pid == main and c.name in ("clone", "clone3", "fork", "vfork")
             and "CLONE_THREAD" not in c.args and c.ret.isdigit()]
    out: dict[str, float] = {}
    if not forks:
        return out
    fork, child = forks[0], int(forks[0].ret)
    family = {child} | {int(c.ret) for c in calls if c.pid == child and "CLONE_THREAD" in c.args
                        and c.ret.isdigit()}
    out["start to fork (interpreter, fencing.py, options)"] = fork.start - start
    locks = [c for c in calls if c.pid in family and c.name == "flock"]
    prs = [c for c in calls if c.pid in family and c.name == "ioctl" and PR_IOCTL.search(c.args)]
    child_exit = next((c for c in calls if c.pid == child and c.name == "exit_group"), None)
    main_exit = next((c for c in calls if c.pid == main and c.name == "exit_group"), None)
    if locks:
        out["fork to lock (child's imports, plan, discovery)"] = locks[0].start - fork.start
    if prs:
        first = locks[0].end if locks else fork.start
        out["lock to first PR command"] = prs[0].start - first
        out["first to last PR command"] = max(c.end for c in prs) - prs[0].start
        out["in PR commands (sum)"] = sum(c.end - c.start for c in prs)
        out["PR commands"] = float(len(prs))
        if child_exit:
            out["last PR command to child's exit"] = child_exit.start - max(c.end for c in prs)
    if child_exit and main_exit:
        out["child's exit to agent's exit"] = main_exit.start - child_exit.start
    if main_exit:
        out["whole (traced)"] = main_exit.start - start
    return out


def import_times(stderr: str, top: int = 12) -> list[tuple[str, float]]:
    """(module, cumulative seconds) of the slowest top-level imports in
    PYTHONPROFILEIMPORTTIME output, parent and child together (a module both import is the
    child's only when the parent had not: the child inherits the parent's modules)."""
    got: dict[str, float] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        parts = line[len("import time:"):].split("|")
        if len(parts) != 3:
            continue
        name = parts[2][1:]  # one space after the bar, then the nesting's indent
        if name and not name.startswith(" "):
            got[name] = got.get(name, 0.0) + int(parts[1]) / 1e6
    return sorted(got.items(), key=lambda kv: -kv[1])[:top]


def wall(argv: list[str], runs: int, between: object = None) -> float:
    times = []
    for _ in range(runs):
        if callable(between):
            between()
        t0 = time.monotonic()
        subprocess.run(argv, capture_output=True, check=False)
        times.append(time.monotonic() - t0)
    return statistics.median(times)


def main() -> int:
    from ..fixtures.iscsi import IscsiLab
    from ..fixtures.packaged import install
    from .bench_guest import INSTALLED, fence_pr, take_unit_attentions, unfence
    from .bench_startup import FENCING_FLOOR

    ap = argparse.ArgumentParser()
    ap.add_argument("--luns", default="1,4")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    sizes = [int(x) for x in a.luns.split(",")]
    install(Path(INSTALLED).parents[1])
    lab = IscsiLab(luns=max(sizes), nodes=2, paths=2, size_mb=1)
    lab.make_maps(1)
    lab.make_maps(2)
    unfence(lab.maps[1], "node1")
    py = "/usr/bin/python3"
    floors = {"python3 -S -c pass": wall([py, "-S", "-c", "pass"], a.runs),
              "python3 -c pass": wall([py, "-c", "pass"], a.runs),
              "python3 + fencing.py": wall([py, "-c", FENCING_FLOOR], a.runs)}
    emit(floors=floors, kernel=os.uname().release)
    for n in sizes:
        argv = fence_pr("node1", "off", "node2", lab.maps[1][:n])

        def again(n: int = n) -> None:
            unfence(lab.maps[2][:n], "node2")
            take_unit_attentions(lab, n)

        emit(luns=n, wall=wall(argv, a.runs, again))
        again()
        r = subprocess.run(argv, capture_output=True, text=True, check=False,
                           env=dict(os.environ, PYTHONPROFILEIMPORTTIME="1"))
        emit(luns=n, rc=r.returncode, imports=import_times(r.stderr))
        traced = []
        for _ in range(3):
            again()
            with tempfile.NamedTemporaryFile("r", suffix=".strace") as f:
                subprocess.run(["strace", "-f", "--seccomp-bpf", "-ttt", "-T", "-qq", "-o", f.name,
                                "-e", "trace=execve,clone,clone3,fork,vfork,flock,ioctl,exit_group",
                                *argv], capture_output=True, check=False)
                traced.append(phases(parse_strace(Path(f.name).read_text())))
        keys = [k for k in traced[0] if all(k in t for t in traced)]
        emit(luns=n, phases={k: statistics.median(t[k] for t in traced) for k in keys})
    return 0


if __name__ == "__main__":
    sys.exit(main())
