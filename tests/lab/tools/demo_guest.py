"""The demo's story, inside the lab guest: a two-node Pacemaker cluster fences node2 through
fence_pr, told in plain words."""

from __future__ import annotations

import errno
import time
from pathlib import Path

from fence_pr.keys import corosync_key

from ..fixtures.cluster import CLUSTER_NAME, Cluster, ClusterError
from ..fixtures.io import write_block
from ..fixtures.topology import LioLab, ScsiLun, scsi_keys

KEYS = {f"node{i}": corosync_key(CLUSTER_NAME, i) for i in (1, 2)}


def say(text: str) -> None:
    print(text, flush=True)


def write(lun: ScsiLun, nodeid: int) -> int:
    """O_DIRECT write from the node's first running path (its own I_T nexus)."""
    path = next(p for p in lun.node_paths(nodeid)
                if Path(f"/sys/block/{p.name}/device/state").read_text().strip() == "running")
    return write_block(path.dev)


def outcome(err: int) -> str:
    if err == 0:
        return "ok"
    if err == errno.EBADE:
        return "REFUSED with EBADE (reservation conflict)"
    return f"failed with errno {err}"


def keys_now(lab: LioLab) -> str:
    names: dict[int, str] = {v: k for k, v in KEYS.items()}
    found = scsi_keys(lab.luns[0].paths[(2, 1)].dev)
    if not found:
        return "none"
    return ", ".join(f"0x{k:x} ({names.get(k, '?')})" for k in found)


def main() -> int:
    t_start = time.monotonic()
    say("Shared storage: 2 LUNs (LIO ramdisks); each node reaches each LUN over 2 paths and "
        "has its own dm-multipath map of it.")
    lab = LioLab(luns=2, nodes=2, paths=2)
    links = {f"node{n}": {f"lun{lun.index}": m for lun, m in zip(lab.luns, lab.make_maps(n),
                                                                  strict=True)}
             for n in (1, 2)}
    cl = Cluster(Path("/tmp/fence_pr-cluster"), links)
    say("Cluster: node1 and node2, each in its own network/mount namespaces, corosync 3 "
        "(knet, two_node) and Pacemaker 2.1, started by hand. One stonith resource, "
        f"fence_pr devices={cl.devices} meta provides=unfencing; no keys configured: "
        "fence_pr derives them from corosync (cluster name hash + node ID):")
    for n, k in KEYS.items():
        say(f"  {n}: 0x{k:x}")
    try:
        cl.build()
        t0 = time.monotonic()
        cl.start()
        full = [2] * len(lab.luns)
        for n in ("node1", "node2"):
            cl.wait(lambda n=n: [scsi_keys(lun.paths[(2, 1)].dev).count(KEYS[n])
                                 for lun in lab.luns] == full,
                    f"{n} unfenced on every path", 300)
        cl.wait(lambda: cl["node1"].online() == {"node1", "node2"}, "both nodes online", 120)
        say(f"Pacemaker formed the cluster and unfenced both nodes (each ran fence_pr -o on "
            f"itself) in {time.monotonic() - t0:.0f}s.")
        say(f"Keys on LUN 0 as the target reports them: {keys_now(lab)} (one per path)")
        say(f"node2 writes to both LUNs: {', '.join(outcome(write(lun, 2)) for lun in lab.luns)}")

        n1, n2 = cl["node1"], cl["node2"]
        say("node1 runs: stonith_admin --fence node2")
        t0 = time.monotonic()
        r = n1.fence("node2")
        took = time.monotonic() - t0
        if r.returncode:
            say(f"fencing FAILED (exit {r.returncode}): {r.stdout}{r.stderr}")
            return 1
        ev = next(e for e in n1.fence_history("node2") if e.action in ("off", "reboot"))
        say(f"Pacemaker fenced node2 in {took:.1f}s: action '{ev.action}', executed by "
            f"{ev.delegate} (fence_pr -o off: PREEMPT of node2's key), result {ev.status}.")
        say(f"Keys on LUN 0 now: {keys_now(lab)} (node2's 0x{KEYS['node2']:x} is gone)")
        w2 = [write(lun, 2) for lun in lab.luns]
        w1 = [write(lun, 1) for lun in lab.luns]
        say(f"node2 writes again: {', '.join(outcome(e) for e in w2)}")
        say(f"node1 writes: {', '.join(outcome(e) for e in w1)}")
        cl.wait(lambda: not n2.pacemakerd_running(), "node2's Pacemaker to stop", 120)
        say("node2's Pacemaker was told it had been fenced and stopped itself "
            "(\"We were allegedly just fenced\").")
        ok = w2 == [errno.EBADE] * len(lab.luns) and w1 == [0] * len(lab.luns)
    except ClusterError as e:
        say(f"Demo FAILED: {e}")
        return 1
    finally:
        cl.teardown()
        lab.teardown()
    say(("Demo complete: Pacemaker cut node2 off the storage through fence_pr"
         if ok else "Demo FAILED: the writes did not come out as expected")
        + f" ({time.monotonic() - t_start:.0f}s in the guest).")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
