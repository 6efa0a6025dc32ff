"""`make bench`: boot the lab once, fence a node off N LUNs x 2 paths with fence_pr,
fence_scsi and fence_mpath (tests/lab/tools/bench_guest.py), print the table and write it to
docs/bench.md."""

from __future__ import annotations

import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any, cast

from ..runner.vm import PROJECT
from . import bench_plot, bench_startup, guestrun

AGENTS = ("fence_pr", "fence_scsi", "fence_mpath")
OUT = PROJECT / "docs/bench.md"
RAW = PROJECT / "docs/bench-results.json"
CLUSTER_RAW = PROJECT / "docs/bench-cluster.json"


def merge(old: list[dict[str, object]], new: list[dict[str, object]],
          agents: list[str]) -> list[dict[str, object]]:
    """A run of some agents replaces their rows in the last full run's results."""
    kept = [r for r in old if r.get("agent") not in agents and "agent" in r]
    meta = [r for r in old if "agent" not in r]
    return ([r for r in new if "agent" in r] + kept + meta
            + [r for r in new if "multipathd_start_s" in r])


def parse(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line[6:]) for line in stdout.splitlines() if line.startswith("BENCH ")]


STAMP = re.compile(r"^\[bench (\d\d):(\d\d):(\d\d)\]", re.M)


def stopped_run(log: str, agents: list[str], why: str) -> tuple[list[dict[str, object]], float]:
    """What a `make bench` stopped part way had measured (its BENCH lines in its log), with a
    row saying `why` for each size of each agent it never reached, and the seconds its guest
    side ran: a run cut short keeps its figures and says what it lacks."""
    results = parse(log)
    secs = [int(h) * 3600 + int(m) * 60 + int(s) for h, m, s in STAMP.findall(log)]
    span = float((secs[-1] - secs[0]) % 86400) if secs else 0.0
    reached = {r["agent"] for r in results if "agent" in r}
    sizes = sorted({int(str(r["luns"])) for r in results if "luns" in r})
    results += [{"agent": a, "luns": n, "skipped": why}
                for a in agents if a not in reached for n in sizes]
    return results, span


def cmds(r: dict[str, object]) -> str:
    mean = f"{float(r['cmds_per_lun']):.1f}"  # type: ignore[arg-type]
    return mean + (f" ({float(r['cmds_median']):g})" if "cmds_median" in r else "")  # type: ignore[arg-type]


def table(results: list[dict[str, object]], kernel: str, host_s: float) -> str:
    runs = {(r["agent"], r["luns"]): r for r in results
            if "agent" in r and r.get("action", "off") == "off"}
    sizes = sorted({int(r["luns"]) for r in results if "luns" in r})  # type: ignore[call-overload]
    meta = {k: v for r in results for k, v in r.items() if k not in ("agent", "luns")}
    mpd_drain = meta.get("multipathd_udev_drain_s")
    startup = {str(r["startup"]): float(r["wall"]) for r in results  # type: ignore[arg-type]
               if "startup" in r}
    lines = [
        "| LUNs | agent | wall time (median) | runs | x fence_pr | SCSI commands per LUN "
        "(at the target): mean (median) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    failures: list[str] = []
    for n in sizes:
        base = runs.get(("fence_pr", n), {}).get("wall")
        for agent in AGENTS:
            r = runs.get((agent, n))
            if r is None:
                continue
            if "skipped" in r:
                why = " ".join(str(r["skipped"]).split())
                lines.append(f"| {n} | {agent} | not run: {why} | | | |")
                continue
            wall = float(r["wall"])  # type: ignore[arg-type]
            ratio = f"{wall / float(base):.1f}x" if base else ""  # type: ignore[arg-type]
            fails = cast(list[dict[str, object]], r.get("failed") or [])
            runs_s = f"{r['runs']}" + (f" (+{len(fails)} failed)" if fails else "")
            lines.append(f"| {n} | {agent} | {wall:.2f} s | {runs_s} | {ratio} | "
                         f"{cmds(r)} |")
            failures += [f"{agent} at {n} LUNs failed after {float(f['wall']):.1f} s: "  # type: ignore[arg-type]
                         f"{f['why']}" for f in fails]
    lines.append("")
    lines += small_targets({(str(a), int(str(n))): float(str(r["wall"]))
                            for (a, n), r in runs.items() if "wall" in r}, startup)
    lines += monitoring_table(results)
    if failures:
        lines += ["Failed runs (not in the medians):", ""] + [f"- {f}" for f in failures] + [""]
    lines.append("Agent start-up (`-o metadata`, median of 5): " + ", ".join(
        f"{a} {s:.2f} s" for a, s in startup.items()) + ".")
    if "fence_pr" in startup and "fence_scsi" in startup:
        share = startup["fence_pr"] / startup["fence_scsi"]
        lines.append(f"fence_pr's start-up is {100 * share:.0f}% of fence_scsi's in the guest "
                     f"(target under {100 * bench_startup.TARGET:.0f}%).")
    return "\n".join(lines) + "\n" + (
        f"\nLab: kernel {meta.get('kernel', kernel)}, QEMU TCG (software emulation, 1 vCPU, "
        "3 GB), LIO iSCSI target over 127.0.0.1/.2, two nodes x two sessions, one hand-made "
        "dm-multipath map per LUN per node (multipathd takes them over for fence_mpath only). "
        f"Lab set-up {float(meta.get('setup_s', 0)):.0f} s (udev's backlog "  # type: ignore[arg-type]
        f"{float(meta.get('udev_drain_s', 0)):.0f} s of it), "  # type: ignore[arg-type]
        + (f"multipathd start {float(str(meta['multipathd_start_s'])):.0f} s"
           + (f" (then udev's backlog from its take-over of the maps {float(mpd_drain):.0f} s)"  # type: ignore[arg-type]
              if mpd_drain is not None else "") + ", "
           if "multipathd_start_s" in meta else "multipathd not started, ")
        + f"whole bench {host_s / 60:.0f} min.\n")


# Issue 17, where clusters live: (LUNs, peer) -> how many times fence_pr's time the peer's
# must be at least; and fence_pr's 1-LUN `off` against its floor, at most.
SPEEDUP_TARGETS = {(1, "fence_scsi"): 3.0, (1, "fence_mpath"): 4.0,
                   (4, "fence_scsi"): 5.0, (4, "fence_mpath"): 8.0}
FLOOR_TARGET = 1.5


def small_targets(wall: dict[tuple[str, int], float], startup: dict[str, float]) -> list[str]:
    """Issue 17's targets at 1 and 4 LUNs, from this run's median `off` times per (agent,
    LUNs) and its start-up figures, each marked met or not: the table does not hide a miss."""
    lines = []
    for (n, peer), want in SPEEDUP_TARGETS.items():
        if (peer, n) in wall and ("fence_pr", n) in wall:
            got = wall[(peer, n)] / wall[("fence_pr", n)]
            lines.append(f"- {n} LUN{'s' if n > 1 else ''}: {peer} {wall[(peer, n)]:.2f} s is "
                         f"{got:.2f}x fence_pr's {wall[('fence_pr', n)]:.2f} s (target at "
                         f"least {want:g}x: {'met' if got >= want else 'NOT met'})")
    floor = startup.get(bench_startup.FLOOR)
    if floor and ("fence_pr", 1) in wall:
        got = wall[("fence_pr", 1)] / floor
        lines.append(f"- fence_pr's 1-LUN `off` {wall[('fence_pr', 1)]:.2f} s is {got:.2f}x its "
                     f"floor, {bench_startup.FLOOR} {floor:.2f} s in the same guest (target at "
                     f"most {FLOOR_TARGET:g}x: {'met' if got <= FLOOR_TARGET else 'NOT met'})")
    return ["Issue 17's targets, this run's medians:", "", *lines, ""] if lines else []


# One PR IN per path per `monitor` (2 paths per LUN here), one per device per `status`.
PR_IN_TARGETS = {"monitor": 2.0, "status": 1.0}
PR_IN_WHY = {"monitor": "one per path, 2 paths", "status": "one per device"}


def monitoring_table(results: list[dict[str, object]]) -> list[str]:
    """fence_pr's `monitor` and `status` per N: what Pacemaker's recurring checks cost, against
    issue 17's bounds (one PR IN per path per `monitor`, one per device per `status`;
    `monitor` at the largest N under 3x its time at 16)."""
    rows = {(str(r["action"]), int(str(r["luns"]))): r for r in results
            if r.get("agent") == "fence_pr" and r.get("action") in ("monitor", "status")}
    if not rows:
        return []
    lines = ["fence_pr being monitored (node2 registered; 2 paths per LUN):", "",
             "| LUNs | action | wall time (median) | runs | SCSI commands per LUN: mean (median) |",
             "|---:|---|---:|---:|---:|"]
    for (action, n), r in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if "skipped" in r:
            lines.append(f"| {n} | {action} | not run: {' '.join(str(r['skipped']).split())} "
                         "| | |")
        else:
            lines.append(f"| {n} | {action} | {float(str(r['wall'])):.2f} s | {r['runs']} | "
                         f"{cmds(r)} |")
    lines.append("")
    for action, most in PR_IN_TARGETS.items():
        per = [float(str(r["cmds_per_lun"])) for (a, _), r in rows.items()
               if a == action and "cmds_per_lun" in r]
        if per:
            lines.append(f"- `{action}`: at most {max(per):.1f} commands per LUN at any N "
                         f"(target at most {most:g}, {PR_IN_WHY[action]}: "
                         f"{'met' if max(per) <= most else 'NOT met'})")
    mon = {n: float(str(r["wall"])) for (a, n), r in rows.items() if a == "monitor" and "wall" in r}
    top = max(mon, default=0)
    if 16 in mon and top > 16:
        ratio = mon[top] / mon[16]
        lines.append(f"- `monitor` at {top} LUNs took {ratio:.2f}x its time at 16 "
                     f"(target under 3x: {'met' if ratio < 3 else 'NOT met'})")
    return [*lines, ""]


DOC_HEAD = """# Benchmark: fence_pr, fence_scsi, fence_mpath

![wall time against LUNs, log-log, per agent](bench.svg)

`make bench` (tests/lab/tools/bench.py, guest side tests/lab/tools/bench_guest.py) boots the
lab once and fences node2 off N LUNs x 2 paths from node1 with each agent, all in that one
run. Wall time is the agent's whole run, process start to exit, median of the runs shown
(one run only where a run took over 150 s; an N is not run when the agent's time at the
previous N, scaled, projects over 1,800 s). SCSI commands are counted at the target: LIO's
`statistics/scsi_lu/num_cmds` of the N LUNs before and after the run, divided by N: the
mean, and in brackets the median of the per-LUN counts. Before each count udevd's queue is
drained: `udevadm settle`, then waiting until udevd's queue file /run/udev/queue is gone (up
to 10 min before a run, 60 s after it, 30 min for a set-up's backlog). So the udev rescans
an agent causes count for that agent, and the set-up's backlog of uevents (1,024 sd and 512
dm devices, whose blkid probes read through node1's paths; multipathd's take-over of the 512
maps) counts for none. `udevadm settle` alone does not do this: while udevd is too busy to
answer its control socket, settle returns 0 at once. A run that has not ended after 3x its
projection from the previous N (at least 10 min, at most 40) is killed and reported. Between
runs node2 is unfenced again with fence_pr and the unit attentions that left are taken
(neither timed nor counted).

The transport is iSCSI: fence_scsi and fence_mpath always send PREEMPT AND ABORT, which wedges
LIO on tcm_loop paths (docs/kernel-behaviour.md). fence_pr runs as a distribution package
would install it (system python3, package compiled on a local file system); the lab's venv
on the 9p checkout is slower to start, shown separately. fence_scsi is given node1's first sd
path of each LUN (docs/peers.md: its sg_persist through the lab's maps fails), fence_pr and
fence_mpath the dm maps. Under software emulation every process start costs about as much as
on a slow real machine, which is what fence_scsi (one sg_persist or sg_turs process per
command) and fence_mpath (one mpathpersist per command) pay per LUN. fence_mpath runs with
multipathd managing every map, whose path checker adds its own commands to the counts during
fence_mpath's runs.

"""


def cluster_table(rows: list[dict[str, Any]]) -> str:
    """`make bench-cluster`'s results (docs/bench-cluster.json): request to completion and
    node loss to fenced, per agent and N, against issue 17's target for 4 LUNs."""
    if not rows:
        return ""
    lines = ["## Fencing as Pacemaker times it (`make bench-cluster`)", "",
             "| LUNs | agent | `stonith_admin --fence` request to completion (median) | "
             "node loss to fenced (median) | runs | x fence_pr (request) |",
             "|---:|---|---:|---:|---:|---:|"]
    med = {(r["agent"], r["luns"]): statistics.median(r["request"]) for r in rows
           if r.get("request")}
    failures = []
    for r in sorted(rows, key=lambda r: (r["luns"], AGENTS.index(r["agent"]))):
        n, agent = r["luns"], r["agent"]
        if "skipped" in r:
            lines.append(f"| {n} | {agent} | not run: {r['skipped']} | | | |")
            continue
        req = f"{med[(agent, n)]:.2f} s" if (agent, n) in med else "none"
        loss = f"{statistics.median(r['loss']):.2f} s" if r.get("loss") else "none"
        base = med.get(("fence_pr", n))
        ratio = f"{med[(agent, n)] / base:.1f}x" if base and (agent, n) in med else ""
        lines.append(f"| {n} | {agent} | {req} | {loss} | {len(r['request'])} / "
                     f"{len(r['loss'])} | {ratio} |")
        failures += [f"{agent} at {n} LUNs, {f}" for f in r.get("failed", [])]
    lines.append("")
    if failures:
        lines += ["Failed runs (not in the medians):", ""] + [f"- {f}" for f in failures] + [""]
    pr4, scsi4 = med.get(("fence_pr", 4)), med.get(("fence_scsi", 4))
    if pr4 and scsi4:
        lines.append(f"At 4 LUNs fence_scsi's request to completion is {scsi4 / pr4:.2f}x "
                     "fence_pr's (target at least 2x).")
        lines.append("")
    return "\n".join(lines)


def with_section(doc: str, name: str, body: str) -> str:
    """`doc` with the part `make <name>` generates replaced by `body`, between two marker
    comments (appended, with its markers, where there is none yet): the analysis written
    around the figures stays when a run renews them."""
    begin = f"<!-- {name}: written by `make {name}`; edits inside are lost -->"
    end = f"<!-- /{name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in doc and end in doc:
        head, _, rest = doc.partition(begin)
        return head + block + rest.partition(end)[2]
    return doc.rstrip() + "\n\n" + block + "\n"


def write_doc(results: list[dict[str, object]], kernel: str, host_s: float) -> str:
    """docs/bench.md's generated parts from the last `make bench` and the last `make
    bench-cluster`; everything else in it is kept."""
    text = table(results, kernel, host_s)
    doc = OUT.read_text() if OUT.exists() else DOC_HEAD
    doc = with_section(doc, "bench", text)
    rows = json.loads(CLUSTER_RAW.read_text())["results"] if CLUSTER_RAW.exists() else []
    if rows:
        doc = with_section(doc, "bench-cluster", cluster_table(rows))
    OUT.write_text(doc)
    return text


def main() -> int:
    ap = guestrun.parser(__doc__, "1,4,16,64,256", 3)
    ap.add_argument("--agents", default=",".join(AGENTS))
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/bench.md")
    ap.add_argument("--from-log", metavar="LOG", help="no lab run: the figures a run stopped "
                    "part way printed into LOG (its output), agents it never reached marked")
    ap.add_argument("--why", default="the run was stopped before this agent",
                    help="with --from-log: what the rows of agents never reached say")
    a = ap.parse_args()
    if a.from_log:
        return write(*stopped_run(Path(a.from_log).read_text(), a.agents.split(","), a.why),
                     kernel=a.kernel, no_write=a.no_write)
    t0 = time.monotonic()
    got = guestrun.results(
        f".venv/bin/python -m tests.lab.tools.bench_guest --luns {a.luns} --runs {a.runs} "
        f"--agents {a.agents}", a.kernel, "BENCH", 4 * 3600, "bench")
    if got is None:
        return 1
    results: list[dict[str, object]] = got
    host_s = time.monotonic() - t0
    agents = a.agents.split(",")
    if set(agents) != set(AGENTS) and RAW.exists():
        old = json.loads(RAW.read_text())
        results = merge(old["results"], results, agents)
        host_s = float(old["host_s"])
    return write(results, host_s, a.kernel, a.no_write)


def write(results: list[dict[str, object]], host_s: float, kernel: str, no_write: bool) -> int:
    """The table printed, and unless `no_write` the raw results, docs/bench.md and the plot."""
    if no_write:
        print(table(results, kernel, host_s))
        return 0
    RAW.write_text(json.dumps({"results": results, "host_s": host_s}, indent=1) + "\n")
    print(write_doc(results, kernel, host_s))
    print(f"[bench] wrote {OUT.relative_to(PROJECT)}")
    print(f"[bench] wrote {bench_plot.plot(results).relative_to(PROJECT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
