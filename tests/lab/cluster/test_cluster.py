"""fence_pr under a real two-node corosync 3 + Pacemaker cluster (tests/lab/fixtures/cluster.py).

One cluster per module, scenarios in order; each checks the cluster's view (stonith_admin
--history, crm_mon) and the storage's (keys at the target with sg_persist, O_DIRECT writes).
Keys are not configured anywhere: fence_pr derives them from corosync's cmap.
Fencing latencies go to lab-out/cluster-times.json and to the terminal.
"""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import pytest

from fence_pr.keys import corosync_key

from ..fixtures.cluster import CLUSTER_NAME, LINK_DIR, PROJECT, STONITH_ID, Cluster, ClusterNode
from ..fixtures.io import write_block
from ..fixtures.scenario import START_TIMEOUT, two_node_cluster
from ..fixtures.topology import scsi_keys

KERNEL = os.environ.get("LAB_KERNEL", "?")
KEY = {f"node{i}": corosync_key(CLUSTER_NAME, i) for i in (1, 2)}
TIMES_FILE = PROJECT / "lab-out" / f"cluster-times-{KERNEL}.json"  # one per kernel: runs overlap
FENCE_TIMEOUT = 180  # token loss + scheduler + fence_pr under TCG

times: dict[str, float] = {}


def record(capsys: pytest.CaptureFixture[str], name: str, seconds: float) -> None:
    times[name] = round(seconds, 2)
    with capsys.disabled():
        print(f"\n[cluster] kernel {KERNEL}: {name}: {seconds:.2f}s", flush=True)
    TIMES_FILE.parent.mkdir(exist_ok=True)
    TIMES_FILE.write_text(json.dumps({KERNEL: times}, indent=2) + "\n")


@pytest.fixture(scope="module")
def cl(lio):  # type: ignore[no-untyped-def]
    """The session's LUNs (clean), a two-node cluster over two of them, started."""
    with two_node_cluster(lio, "/tmp/fence_pr-cluster") as c:
        yield c


# --- the storage's view ----------------------------------------------------------------------

def registered(c: Cluster, node: str) -> list[int]:
    """How many paths hold `node`'s key, per LUN, as the target says (asked through node2's
    last path, which no scenario takes down)."""
    return [scsi_keys(lun.paths[(2, 1)].dev).count(KEY[node]) for lun in c.luns]  # type: ignore[attr-defined]


def writes(c: Cluster, node: ClusterNode) -> list[int]:
    """An O_DIRECT write per LUN from `node`'s I_T nexus: 0 or the errno.

    Written on the node's first running sd path, not through its dm map: a reservation
    conflict answers EBADE on both (docs/kernel-behaviour.md), but in the lab a dm map's
    failfast I/O also fails paths on the unit attentions every PR change raises (and at
    the time of writing even on fresh maps), which would turn the answer into EIO.
    """
    nodeid = int(node.name.removeprefix("node"))
    out = []
    for lun in c.luns:  # type: ignore[attr-defined]
        path = next(p for p in lun.node_paths(nodeid)
                    if Path(f"/sys/block/{p.name}/device/state").read_text().strip()
                    == "running")
        out.append(write_block(path.dev))
    return out


def paths_per_lun(c: Cluster) -> int:
    return len(c.luns[0].node_paths(1))  # type: ignore[attr-defined]


# --- the cluster's view ----------------------------------------------------------------------

FENCING = ("off", "reboot")  # Pacemaker asks for reboot; fence_pr has no reboot: off runs


def wait_unfenced(c: Cluster, node: str, ons_before: int) -> None:
    full = [paths_per_lun(c)] * len(c.luns)  # type: ignore[attr-defined]
    c.wait(lambda: registered(c, node) == full,
           f"{node}'s key {KEY[node]:#x} on every path of every LUN (now {registered(c, node)})",
           START_TIMEOUT)
    c.wait(lambda: len(c["node1"].fence_successes(node, ("on",))) > ons_before,
           f"a successful unfencing ('on') of {node} in node1's fence history", 60)


def restart(c: Cluster, name: str) -> float:
    """Stop whatever runs of `name`, start corosync and Pacemaker again, wait until it is
    online and unfenced; returns the seconds from start to unfenced."""
    ons = len(c["node1"].fence_successes(name, ("on",)))
    started = c.restart_node(name)
    t0 = time.monotonic()
    wait_unfenced(c, name, ons)
    return started + time.monotonic() - t0


# --- scenarios, in order ---------------------------------------------------------------------

def test_nodes_unfence_themselves_when_the_cluster_starts(cl, capsys) -> None:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    cl.wait(cl.online_everywhere, "node1 and node2 online in both nodes' crm_mon",
            START_TIMEOUT)
    for node in ("node1", "node2"):
        wait_unfenced(cl, node, 0)
    record(capsys, "cluster start to both nodes unfenced", time.monotonic() - t0)
    # fence_pr derived the keys from corosync itself: nothing configured them.
    for n in cl.nodes:
        r = n.run("fence_pr", "-o", "list", "--devices", cl.devices, check=False)
        assert r.returncode == 0 and "node1" in r.stdout and "node2" in r.stdout, r
        assert f"{KEY[n.name]:x}" in r.stdout.lower(), r
    for n in cl.nodes:
        assert writes(cl, n) == [0] * len(cl.luns), n.name
    mon = cl["node1"].crm_mon()
    assert "Online: [ node1 node2 ]" in mon, mon
    assert STONITH_ID in mon, mon


def test_stonith_admin_fences_node2(cl, capsys) -> None:  # type: ignore[no-untyped-def]
    n1, n2 = cl["node1"], cl["node2"]
    offs = len(n1.fence_successes("node2", FENCING))
    t0 = time.monotonic()
    r = n1.fence("node2")
    took = time.monotonic() - t0
    assert r.returncode == 0, f"{r.stdout}{r.stderr}\n{cl.diagnostics()}"
    record(capsys, "stonith_admin --fence node2 (request to completion)", took)
    cl.wait(lambda: len(n1.fence_successes("node2", FENCING)) > offs,
            "the fencing of node2 in node1's history", 60)
    events = [e for e in n1.fence_history("node2")
              if e.action in FENCING and e.status == "success"]
    assert {e.delegate for e in events} == {"node1"}, events  # node1 ran fence_pr
    assert registered(cl, "node2") == [0] * len(cl.luns)
    assert registered(cl, "node1") == [paths_per_lun(cl)] * len(cl.luns)
    assert writes(cl, n2) == [errno.EBADE] * len(cl.luns)
    assert writes(cl, n1) == [0] * len(cl.luns)
    # node2's Pacemaker learns it was fenced and stops itself.
    cl.wait(lambda: not n2.pacemakerd_running(), "node2's pacemakerd to stop after being "
            "told it was fenced", 120)
    assert "allegedly just fenced" in (n2.state / "log-pacemaker/pacemaker.log").read_text()
    cl.wait(lambda: n1.online() == {"node1"}, "node1 to show node2 offline", 60)


def test_node2_restarted_unfences_itself_and_writes(cl, capsys) -> None:  # type: ignore[no-untyped-def]
    record(capsys, "node2 restart to unfenced", restart(cl, "node2"))
    assert registered(cl, "node2") == [paths_per_lun(cl)] * len(cl.luns)
    assert writes(cl, cl["node2"]) == [0] * len(cl.luns)


def test_node2_killed_is_fenced_by_node1(cl, capsys) -> None:  # type: ignore[no-untyped-def]
    n1, n2 = cl["node1"], cl["node2"]
    offs = len(n1.fence_successes("node2", FENCING))
    t0 = time.monotonic()
    killed = n2.kill_daemons()
    assert killed, "node2 had no processes to kill"
    cl.wait(lambda: len(n1.fence_successes("node2", FENCING)) > offs,
            "node1 to fence node2 on its own after node2's corosync and Pacemaker died",
            FENCE_TIMEOUT)
    record(capsys, "node2 killed to node2 fenced (seen in node1's history)",
           time.monotonic() - t0)
    assert registered(cl, "node2") == [0] * len(cl.luns)
    assert writes(cl, n2) == [errno.EBADE] * len(cl.luns)
    assert writes(cl, n1) == [0] * len(cl.luns)
    assert n1.online() == {"node1"}
    record(capsys, "node2 restart (after kill) to unfenced", restart(cl, "node2"))
    assert writes(cl, n2) == [0] * len(cl.luns)


@pytest.mark.extra  # `make lab-slow` (and `make demo` runs pcs stonith create)
def test_pcs_accepts_fence_pr_and_stonith_admin_validates(cl, tmp_path) -> None:  # type: ignore[no-untyped-def]
    n1 = cl["node1"]
    cib = tmp_path / "cib.xml"
    cib.write_text(n1.run("cibadmin", "--query").stdout)
    r = n1.run("pcs", "-f", str(cib), "stonith", "create", "pr-fence-pcs", "fence_pr",
               f"devices={cl.devices}", "pcmk_host_list=node1 node2", "--agent-validation",
               "meta", "provides=unfencing", check=False)
    assert r.returncode == 0, r
    text = cib.read_text()
    assert 'type="fence_pr"' in text and 'id="pr-fence-pcs"' in text, text
    assert 'name="provides" value="unfencing"' in text, text
    # pcs knows fence_pr's options from its metadata: an unknown one is refused.
    r = n1.run("pcs", "-f", str(cib), "stonith", "create", "pr-bad", "fence_pr",
               "no_such_option=1", check=False)
    assert r.returncode != 0 and "no_such_option" in r.stderr, r
    # crmsh reads the same metadata.
    r = n1.run("crm", "ra", "info", "stonith:fence_pr", check=False)
    assert r.returncode == 0 and "devices" in r.stdout, r
    # stonith_admin --validate runs fence_pr's validate-all and shows its error.
    r = n1.run("stonith_admin", "--validate", "--agent", "fence_pr",
               "--option", f"devices={LINK_DIR}/no-such-lun", check=False)
    assert r.returncode != 0, r
    assert "no-such-lun" in r.stdout + r.stderr, r
    r = n1.run("stonith_admin", "--validate", "--agent", "fence_pr",
               "--option", f"devices={cl.devices}", check=False)
    assert r.returncode == 0, r


def test_fencing_with_one_of_node1s_paths_down(cl, capsys) -> None:  # type: ignore[no-untyped-def]
    n1, n2 = cl["node1"], cl["node2"]
    down = [lun.paths[(1, 0)] for lun in cl.luns]
    for p in down:
        p.set_state("offline")
    try:
        t0 = time.monotonic()
        r = n1.fence("node2")
        took = time.monotonic() - t0
        assert r.returncode == 0, f"{r.stdout}{r.stderr}\n{cl.diagnostics()}"
        record(capsys, "stonith_admin --fence node2 with one of node1's paths down", took)
        assert registered(cl, "node2") == [0] * len(cl.luns)
        assert writes(cl, n2) == [errno.EBADE] * len(cl.luns)
        assert writes(cl, n1) == [0] * len(cl.luns)  # over node1's other path
    finally:
        for p in down:
            p.set_state("running")
