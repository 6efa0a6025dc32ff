"""Guest side of `make bench`: fence node2 off N LUNs x 2 paths with fence_pr, fence_scsi and
fence_mpath, timing each run and counting the SCSI commands at the target (LIO's per-LU
statistics in configfs, not the agents' own word). One result per line: `BENCH {json}`.

The transport is iSCSI (LIO target, open-iscsi over 127.0.0.1/.2): fence_scsi and
fence_mpath always send PREEMPT AND ABORT, which wedges LIO on tcm_loop paths.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path

from ..fixtures.agentrun import KEYS, NODE_KEYS
from ..fixtures.iscsi import IscsiLab
from ..fixtures.packaged import install
from ..fixtures.peers import Multipathd, mpath_store, scsi_hex
from ..fixtures.topology import take_unit_attention
from . import bench_startup

STORE = "/run/bench-n1"
RUN_BUDGET_S = 1800.0  # skip an N whose projected run time is above this
SLOW_RUN_S = 150.0  # one run this slow is enough to show it
SMALL_N, SMALL_RUNS = 4, 5  # where clusters live (issue 17): cheap runs, so medians of 5
RUN_LIMIT_MIN_S, RUN_LIMIT_MAX_S = 600.0, 2400.0
DRAIN_S = 60.0  # after a run: its own uevents are few; a busier queue is logged, not waited out
PRE_RUN_DRAIN_S = 600.0
SETUP_DRAIN_S = 1800.0  # the set-up's backlog: 1,024 sd and 512 dm devices, each probed


def emit(**kw: object) -> None:
    print("BENCH " + json.dumps(kw), flush=True)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(argv: list[str], timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def make_maps(lab: IscsiLab, node: int) -> list[str]:
    """lab.make_maps without waiting for udev after each map (512 maps: minutes saved)."""
    names = []
    for lun in lab.luns:
        paths = lun.node_paths(node)
        size = Path(f"/sys/block/{paths[0].name}/size").read_text().strip()
        table = (f"0 {size} multipath 0 0 1 1 round-robin 0 {len(paths)} 1 "
                 + " ".join(f"{p.majmin} 1" for p in paths))
        name = f"i{node}-lun{lun.index}"
        r = sh(["dmsetup", "create", "--noudevsync", name, "--table", table,
                "--uuid", f"mpath-{lun.wwid[4:]}-i{node}"])
        if r.returncode != 0:
            raise RuntimeError(f"dmsetup create {name}: {r.stderr}")
        names.append(f"/dev/mapper/{name}")
    return names


UDEV_QUEUE = Path("/run/udev/queue")  # udevd keeps this file while any uevent is unfinished


def drain_udev(cap_s: float = DRAIN_S) -> float:
    """Wait for udevd to work off its queue, at most cap_s; seconds waited.  udev's probe of
    a disk or map (blkid, scsi_id) sends commands through node1's paths: probes an agent
    caused count for it, and none may fall into the next agent's count.  `udevadm settle`
    alone is not enough: when udevd is too busy to answer its control socket (the set-up's
    1,536 devices) it returns 0 at once, so the queue file is watched as well."""
    t0 = time.monotonic()
    sh(["udevadm", "settle", "-t", str(int(cap_s))])
    while UDEV_QUEUE.exists() and time.monotonic() - t0 < cap_s:
        time.sleep(0.5)
    if UDEV_QUEUE.exists():
        log(f"udev still busy after {cap_s:.0f} s (counts may include its probes)")
    return time.monotonic() - t0


def take_unit_attentions(lab: IscsiLab, n: int) -> None:
    """Take the unit attentions the last PR changes left on every path of the first n LUNs
    (multipathd's TUR checker would), so no agent pays for another's. dm's path states do
    not matter here: fence_pr and (as configured here) fence_scsi talk to sd paths, and
    multipathd reinstates paths itself for fence_mpath."""
    for lun in lab.luns[:n]:
        for p in lun.paths.values():
            take_unit_attention(p.dev)
    # The timed run starts with udev idle: at 256 LUNs the last run's key check (lab_keys:
    # sg_persist opens read-write, so udev re-probes each LUN, tests/lab/tools/bench_udev.py) kept
    # udev busy for over 60 s, and fence_pr runs that started then took 2x as long.
    drain_udev(PRE_RUN_DRAIN_S)


def target_cmds(lab: IscsiLab, n: int) -> list[int]:
    """SCSI commands LIO has received for each of the first n LUNs, over every nexus."""
    return [int(Path(lun.so.path, "statistics/scsi_lu/num_cmds").read_text())
            for lun in lab.luns[:n]]


INSTALLED = "/usr/local/sbin/fence_pr"  # as the .deb has it under /usr (packaged.py)


def fence_pr(node: str, action: str, target: str | None, devices: list[str]) -> list[str]:
    return [INSTALLED, "-o", action, *(["-n", target] if target else []),
            "--devices", ",".join(devices),
            "--node_keys", NODE_KEYS, "--local_node", node, "--power-timeout", "600"]


def command(lab: IscsiLab, agent: str, n: int) -> list[str]:
    victim = scsi_hex(KEYS["node2"])
    devices = lab.maps[1][:n]
    if agent == "fence_pr":
        return fence_pr("node1", "off", "node2", devices)
    if agent == "fence_scsi":
        # One sd path per LUN, a configuration fence_scsi documents: its sg_persist on a dm
        # map needs a path dm has not failed, and without multipathd the lab's maps have
        # none (docs/peers.md). The commands per LUN are the same either way.
        paths = [lun.paths[(1, 0)].dev for lun in lab.luns[:n]]
        return ["fence_scsi", "-o", "off", "-k", victim, "-d", ",".join(paths),
                "--power-timeout", "3600"]
    return ["fence_mpath", "-o", "off", "-n", victim, f"--store-path={STORE}",
            "-d", ",".join(devices), "--power-timeout", "3600"]


def unfence(devices: list[str], node: str) -> None:
    r = sh(fence_pr(node, "on", node, devices))
    if r.returncode != 0:
        raise RuntimeError(f"unfencing {node}: {r.stderr[-2000:]}")


class RunFailed(RuntimeError):
    def __init__(self, message: str, wall: float) -> None:
        super().__init__(message)
        self.wall = wall


def counted_run(lab: IscsiLab, agent: str, n: int,
                counting: AbstractContextManager[object] | None = None, limit_s: float = 3600,
                ) -> tuple[subprocess.CompletedProcess[str], float, list[int]]:
    """Node2 unfenced again, then `agent` fences it off the first n LUNs: its result, wall
    time and the SCSI commands each LUN received (udev's probes it caused included).
    `counting` is entered for exactly the window the counts cover (bench_trace traces it)."""
    unfence(lab.maps[2][:n], "node2")
    take_unit_attentions(lab, n)
    with counting or contextlib.nullcontext():
        before = target_cmds(lab, n)
        log(f"{agent} {n} LUNs: run starts")
        t0 = time.monotonic()
        r = sh(command(lab, agent, n), timeout=limit_s)
        wall = time.monotonic() - t0
        log(f"{agent} {n} LUNs: exit {r.returncode} after {wall:.1f} s")
        drain_udev()  # udev's rescans after write-opened closes hit the target: count them
        after = target_cmds(lab, n)
    return r, wall, [a - b for a, b in zip(after, before, strict=True)]


def one_run(lab: IscsiLab, agent: str, n: int, limit_s: float) -> tuple[float, float, float]:
    """(seconds, mean and median SCSI commands per LUN) for fencing node2 off the first n
    LUNs.  A LUN whose count is off the median shows where the agent retried or took
    another path."""
    r, wall, per = counted_run(lab, agent, n, limit_s=limit_s)
    if r.returncode != 0:
        raise RunFailed(f"rc {r.returncode}: {r.stderr.strip().splitlines()[-1:]}", wall)
    left = [i for i, lun in enumerate(lab.luns[:n]) if KEYS["node2"] in lab_keys(lun)]
    if left:
        raise RunFailed(f"exit 0 but node2's key still on LUN(s) {left}", wall)
    return wall, sum(per) / n, statistics.median(per)


def lab_keys(lun) -> list[int]:  # type: ignore[no-untyped-def]
    from ..fixtures.topology import scsi_keys
    return scsi_keys(lun.paths[(1, 1)].dev)


def bench_agent(lab: IscsiLab, agent: str, sizes: list[int], runs: int) -> None:
    """Failed runs are reported with their time and reason, not retried away: an agent that
    fails users under load is a result too."""
    prev: tuple[int, float] | None = None
    for n in sizes:
        if prev is not None and prev[1] * n / prev[0] > RUN_BUDGET_S:
            emit(agent=agent, luns=n, skipped=f"projected {prev[1] * n / prev[0]:.0f} s per run "
                 f"from {prev[0]} LUNs (budget {RUN_BUDGET_S:.0f} s)")
            log(f"{agent} {n} LUNs: skipped (projected)")
            continue
        # A run that hangs is killed at 3x its projection: a result, not a stalled bench.
        limit_s = min(RUN_LIMIT_MAX_S, max(RUN_LIMIT_MIN_S, 3 * prev[1] * n / prev[0])) if prev \
            else RUN_LIMIT_MAX_S
        walls, cmds, medians, failed = [], [], [], []
        for i in range(max(runs, SMALL_RUNS) if n <= SMALL_N else runs):
            try:
                wall, per_lun, median = one_run(lab, agent, n, limit_s)
            except RunFailed as e:
                log(f"{agent} {n} LUNs run {i + 1} failed after {e.wall:.1f} s: {e}")
                failed.append({"wall": e.wall, "why": str(e)[:300]})
                if e.wall > SLOW_RUN_S:
                    break
                continue
            except subprocess.TimeoutExpired:
                log(f"{agent} {n} LUNs run {i + 1}: killed after {limit_s:.0f} s")
                emit(agent=agent, luns=n, skipped=f"no result: run {i + 1} had not ended after "
                     f"{limit_s:.0f} s (3x the projection) and was killed")
                return
            except RuntimeError as e:
                log(f"{agent} {n} LUNs: {e}")
                emit(agent=agent, luns=n, skipped=f"lab error: {str(e)[:300]}")
                return
            walls.append(wall)
            cmds.append(per_lun)
            medians.append(median)
            log(f"{agent} {n} LUNs run {i + 1}: {wall:.2f} s, {per_lun:.1f} cmds/LUN "
                f"(median {median:g})")
            if wall > SLOW_RUN_S:
                break
        if not walls:
            emit(agent=agent, luns=n, failed=failed, skipped=f"failed in {len(failed)} of "
                 f"{len(failed)} run(s), after {failed[0]['wall']:.1f} s: {failed[0]['why']}")
            return
        emit(agent=agent, luns=n, runs=len(walls), wall=statistics.median(walls),
             walls=walls, cmds_per_lun=statistics.median(cmds),
             cmds_median=statistics.median(medians), failed=failed)
        prev = (n, statistics.median(walls))


MONITORING = ("monitor", "status")


def monitoring_command(lab: IscsiLab, action: str, n: int) -> list[str]:
    """fence_pr's `monitor` (the device, every 60 s by default) or `status` of node2 (host
    checks), as Pacemaker runs them on node1 over the first n LUNs."""
    return fence_pr("node1", action, "node2" if action == "status" else None, lab.maps[1][:n])


def bench_monitoring(lab: IscsiLab, sizes: list[int], runs: int) -> None:
    """What being monitored costs: wall time and the SCSI commands each LUN receives per
    `monitor` and per `status`, node2 registered.  Neither writes, so no unit attention is
    left and no udev probe follows; the counts are the agent's own PR IN commands."""
    for n in sizes:
        unfence(lab.maps[2][:n], "node2")
        take_unit_attentions(lab, n)
        for action in MONITORING:
            walls, means, medians = [], [], []
            for _ in range(runs):
                before = target_cmds(lab, n)
                t0 = time.monotonic()
                r = sh(monitoring_command(lab, action, n), timeout=RUN_LIMIT_MAX_S)
                wall = time.monotonic() - t0
                drain_udev()
                per = [a - b for a, b in zip(target_cmds(lab, n), before, strict=True)]
                if r.returncode != 0:
                    emit(agent="fence_pr", action=action, luns=n,
                         skipped=f"rc {r.returncode}: {r.stderr.strip().splitlines()[-1:]}")
                    break
                walls.append(wall)
                means.append(sum(per) / n)
                medians.append(statistics.median(per))
                log(f"fence_pr {action} {n} LUNs: {wall:.2f} s, {sum(per) / n:.1f} cmds/LUN")
            else:
                emit(agent="fence_pr", action=action, luns=n, runs=len(walls),
                     wall=statistics.median(walls), walls=walls,
                     cmds_per_lun=statistics.median(means), cmds_median=statistics.median(medians))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--luns", default="1,4,16,64,256")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--agents", default="fence_pr,fence_scsi,fence_mpath")
    ap.add_argument("--no-monitoring", action="store_true",
                    help="leave out fence_pr's monitor and status")
    a = ap.parse_args()
    sizes = [int(x) for x in a.luns.split(",")]
    agents = a.agents.split(",")
    t0 = time.monotonic()
    log(f"building {max(sizes)} iSCSI LUNs x 2 nodes x 2 paths")
    lab = IscsiLab(luns=max(sizes), nodes=2, paths=2, size_mb=1)
    for node in (1, 2):
        lab.maps[node] = make_maps(lab, node)
    udev_s = drain_udev(SETUP_DRAIN_S)
    sh(["dmsetup", "mknodes"])  # without udev sync, /dev/mapper/* is not made for us
    emit(setup_s=time.monotonic() - t0, udev_drain_s=udev_s, kernel=os.uname().release)
    log(f"udev's set-up backlog drained in {udev_s:.0f} s")
    log(f"lab ready in {time.monotonic() - t0:.0f} s")
    fig = bench_startup.figures(install(Path(INSTALLED).parents[1]))
    log(bench_startup.report("lab guest", fig))
    for name, wall in fig.items():
        emit(startup=name, wall=wall)
    unfence(lab.maps[1], "node1")  # node1 holds the reservation; node2 is re-unfenced per run
    # fence_scsi reads the fencer's own key from the file its `on` writes.
    Path("/var/run/cluster.key").write_text(scsi_hex(KEYS["node1"]) + "\n")
    for agent in agents:
        if agent == "fence_mpath":
            continue
        bench_agent(lab, agent, sizes, a.runs)
    if "fence_pr" in agents and not a.no_monitoring:  # before multipathd's checker runs
        bench_monitoring(lab, sizes, a.runs)
    if "fence_mpath" in agents:
        t1 = time.monotonic()
        try:
            Multipathd(lab, {1: KEYS["node1"], 2: KEYS["node2"]})
        except (TimeoutError, RuntimeError, subprocess.CalledProcessError) as e:
            emit(agent="fence_mpath", luns=sizes[0], skipped=f"multipathd: {e}")
            emit(total_s=time.monotonic() - t0)
            return 0
        emit(multipathd_start_s=time.monotonic() - t1,  # its take-over reloads every map
             multipathd_udev_drain_s=drain_udev(SETUP_DRAIN_S))
        try:
            mpath_store(STORE, lab.maps[1], KEYS["node1"])
            bench_agent(lab, "fence_mpath", sizes, a.runs)
        finally:
            # Not mpd.stop(): putting 512 maps back for tests that will not run took over
            # 7 minutes of udev-synced dmsetup calls after the last result.
            sh(["multipathd", "shutdown"])
    emit(total_s=time.monotonic() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
