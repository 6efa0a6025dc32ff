"""Guest side of `make bench-cluster`: fencing as Pacemaker times it (issue 17, part 2).

For each agent (fence_pr, fence_scsi, fence_mpath) and N LUNs x 2 paths, a two-node cluster
with that agent as its stonith resource, then `--runs` times: `stonith_admin --fence node2`
on node1, request to completion; node2 restarted; node2's corosync and Pacemaker killed, the
loss to node2 fenced in node1's history; node2 restarted.  After each fencing node2's
O_DIRECT writes must be refused on every LUN (EBADE), or the run is a failure, not a time.

The same iSCSI LUNs for every agent (fence_scsi and fence_mpath send PREEMPT AND ABORT,
which wedges LIO on tcm_loop).  fence_pr and fence_mpath are given each node's dm maps,
fence_scsi each node's sd paths (docs/peers.md); fence_mpath's keys are
`pcmk_host_map="node1:1;node2:2"`, with multipathd managing the maps (`reservation_key
file`), its socket carried into each node.  One result per line: `CLUSTER {json}`.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..fixtures.cluster import Cluster, ClusterError, ClusterNode
from ..fixtures.io import write_block
from ..fixtures.iscsi import IscsiLab
from ..fixtures.peers import Multipathd, MultipathdRelay
from ..fixtures.scenario import START_TIMEOUT

AGENTS = ("fence_pr", "fence_scsi", "fence_mpath")
FENCING = ("off", "reboot")  # Pacemaker asks for reboot; the storage agents run off
LOSS_TIMEOUT = 180  # token loss, the scheduler and the agent, under TCG (nominal: pace.py)


def emit(**kw: object) -> None:
    print("CLUSTER " + json.dumps(kw), flush=True)


def log(msg: str) -> None:
    print(f"[bench-cluster {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def links(lab: IscsiLab, agent: str, n: int) -> dict[str, dict[str, str]]:
    luns = lab.luns[:n]
    if agent == "fence_scsi":
        return {f"node{k}": {f"lun{lun.index}-path{p.path}": p.dev for lun in luns
                             for p in lun.node_paths(k)} for k in (1, 2)}
    return {f"node{k}": {f"lun{lun.index}": lab.maps[k][lun.index] for lun in luns}
            for k in (1, 2)}


@contextlib.contextmanager
def cluster(lab: IscsiLab, agent: str, n: int) -> Iterator[tuple[Cluster, MultipathdRelay | None]]:
    params = {"pcmk_host_map": "node1:1;node2:2"} if agent == "fence_mpath" else {}
    mpd = Multipathd(lab, {1: 1, 2: 2}) if agent == "fence_mpath" else None
    relay = MultipathdRelay() if mpd else None
    c = Cluster(Path(f"/tmp/fence_pr-bench-cluster-{agent}-{n}"), links(lab, agent, n),
                stonith_params=params, agent_type=agent)
    try:
        c.build()
        for node in c.nodes if relay else []:
            relay.into(node)  # type: ignore[union-attr]
        c.start()
        yield c, relay
    finally:
        c.teardown()
        if relay:
            relay.close()
        if mpd:
            mpd.stop()
        lab.reset()


def refused(lab: IscsiLab, n: int) -> list[int]:
    """node2's O_DIRECT write on its first path of each of the first n LUNs: 0 or errno."""
    return [write_block(lun.node_paths(2)[0].dev) for lun in lab.luns[:n]]


def ons(c: Cluster, node: str) -> int:
    return len(c["node1"].fence_successes(node, ("on",)))


def offs(c: Cluster) -> int:
    return len(c["node1"].fence_successes("node2", FENCING))


def rejoin(c: Cluster, relay: MultipathdRelay | None) -> None:
    """node2 started again (its relay too) and unfenced by its own agent."""
    before = ons(c, "node2")
    c["node2"].kill_daemons()
    if relay:
        relay.into(c["node2"])
    c.restart_node("node2")
    c.wait(lambda: ons(c, "node2") > before, "node2 unfenced again ('on' in node1's history)",
           START_TIMEOUT)


def fence_request(c: Cluster, n1: ClusterNode) -> float:
    t0 = time.monotonic()
    r = n1.fence("node2")
    took = time.monotonic() - t0
    if r.returncode != 0:
        raise ClusterError(f"stonith_admin --fence node2: rc {r.returncode}: {r.stderr.strip()}")
    return took


def node_loss(c: Cluster) -> float:
    before = offs(c)
    t0 = time.monotonic()
    c["node2"].kill_daemons()
    c.wait(lambda: offs(c) > before, "node1 to fence node2 on its own after its loss",
           LOSS_TIMEOUT)
    return time.monotonic() - t0


def bench(lab: IscsiLab, agent: str, n: int, runs: int) -> None:
    times: dict[str, list[float]] = {"request": [], "loss": []}
    failed: list[str] = []
    with cluster(lab, agent, n) as (c, relay):
        c.wait(lambda: ons(c, "node1") > 0 and ons(c, "node2") > 0,
               f"both nodes unfenced by {agent}", START_TIMEOUT)
        how: dict[str, Callable[[], float]] = {"request": lambda: fence_request(c, c["node1"]),
                                               "loss": lambda: node_loss(c)}
        for i in range(runs):
            for kind, act in how.items():
                try:
                    took = act()
                    got = refused(lab, n)
                    if got != [errno.EBADE] * n:
                        raise ClusterError(f"node2's writes after fencing: {got}, not EBADE")
                    times[kind].append(took)
                    log(f"{agent} {n} LUNs run {i + 1} {kind}: {took:.2f} s")
                    c.wait(lambda: "node2" not in c["node1"].online(),
                           "node1 to show node2 offline", 120)
                    rejoin(c, relay)
                except (ClusterError, TimeoutError) as e:
                    failed.append(f"run {i + 1} {kind}: {str(e).splitlines()[0][:300]}")
                    log(f"{agent} {n} LUNs run {i + 1} {kind} failed: {failed[-1]}")
                    rejoin(c, relay)
    emit(agent=agent, luns=n, request=times["request"], loss=times["loss"], failed=failed)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--luns", default="1,4")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--agents", default=",".join(AGENTS))
    a = ap.parse_args()
    sizes = [int(x) for x in a.luns.split(",")]
    lab = IscsiLab(luns=max(sizes), nodes=2, paths=2)
    lab.make_maps(1)
    lab.make_maps(2)
    for agent in a.agents.split(","):
        for n in sizes:
            log(f"{agent}, {n} LUN(s): cluster start")
            try:
                bench(lab, agent, n, a.runs)
            except (ClusterError, TimeoutError) as e:
                emit(agent=agent, luns=n, skipped=str(e).splitlines()[0][:300])
    return 0


if __name__ == "__main__":
    sys.exit(main())
