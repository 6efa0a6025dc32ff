"""A fence_scsi cluster moves to fence_pr by changing the agent and nothing else.

The two-node lab cluster starts with a fence_scsi stonith resource carrying every option
Debian 12's fence_scsi declares, as pcs writes them into the CIB; fence_scsi unfences both
nodes.  Then only the resource's type changes to fence_pr (fence_scsi is moved out of the
nodes' /usr/sbin, so nothing can fall back to it).  The keys stay as they are (key_value=id
gives fence_scsi's own keys); Pacemaker unfences again after the change, and fence_pr's `on`
keeps the keys and the reservation; node1 fences node2 with fence_pr.  The devices are each
node's raw SCSI paths: fence_scsi registers a map's paths itself but reads the keys through
the map with sg_persist, which answers EIO through the lab's hand-made maps (measured).
`make peers` runs it (marker `extra`), CI does not: a second cluster start.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest

from fence_pr.keys import fence_scsi_key

from ..fixtures.cluster import CLUSTER_NAME, Cluster
from ..fixtures.scenario import START_TIMEOUT, two_node_cluster
from ..fixtures.topology import scsi_keys, scsi_reservation_key

pytestmark = pytest.mark.extra

# fence_scsi key_value=id: the node's position in corosync's node list.
KEY = {"node1": fence_scsi_key(CLUSTER_NAME, 0), "node2": fence_scsi_key(CLUSTER_NAME, 1)}
# Every option of fence_scsi's own (fencing.py's generic ones aside), set as an admin would.
SCSI_RESOURCE = {
    "key_value": "id", "aptpl": "1", "readonly": "1", "suppress_errors": "1",
    "logfile": "/var/log/pacemaker/fence-agent.log",
    "corosync_cmap_path": "/usr/sbin/corosync-cmapctl", "sg_persist_path": "/usr/bin/sg_persist",
    "sg_turs_path": "/usr/bin/sg_turs", "vgs_path": "/sbin/vgs", "delay": "0",
}
# Set by the lab's Cluster for every agent: each node's raw SCSI paths.
SET_BY_THE_CLUSTER = {"devices"}
# Set per operation (by Pacemaker or an admin by hand), or fencing.py's own for every agent.
NOT_FENCE_SCSIS = {"action", "plug", "key", "help", "version", "verbose", "verbose_level",
                   "debug_file", "quiet", "plug_separator", "disable_timeout", "login_timeout",
                   "power_timeout", "power_wait", "shell_timeout", "stonith_status_sleep",
                   "retry_on"}


def fence_scsi_options() -> set[str]:
    out = subprocess.run(["fence_scsi", "-o", "metadata"], capture_output=True, text=True,
                         check=True).stdout
    return {p.attrib["name"] for p in ET.fromstring(out).iter("parameter")
            if not p.attrib.get("deprecated")}


@pytest.fixture(scope="module")
def scsi_cluster(lio) -> Iterator[Cluster]:  # type: ignore[no-untyped-def]
    with two_node_cluster(lio, "/tmp/fence_pr-migration", raw_paths=True,
                          stonith_params=SCSI_RESOURCE, agent_type="fence_scsi") as c:
        yield c


def registered(c: Cluster, node: str) -> list[int]:
    """Paths holding `node`'s key, per LUN, as the target says."""
    return [scsi_keys(lun.paths[(1, 0)].dev).count(KEY[node]) for lun in c.luns]  # type: ignore[attr-defined]


def reservation_key(c: Cluster) -> int:
    """The key holding LUN 0's reservation, as the target says."""
    return scsi_reservation_key(c.luns[0].paths[(1, 0)].dev)  # type: ignore[attr-defined]


def test_the_resource_sets_every_option_fence_scsi_has() -> None:
    missing = (fence_scsi_options() - set(SCSI_RESOURCE) - SET_BY_THE_CLUSTER
               - NOT_FENCE_SCSIS)
    assert not missing, f"fence_scsi options the migrated resource does not set: {missing}"


def test_fence_scsi_unfences_then_fence_pr_fences_with_the_same_keys(
        scsi_cluster: Cluster) -> None:
    c = scsi_cluster
    for node in ("node1", "node2"):
        c.wait(lambda node=node: all(registered(c, node)),
               f"fence_scsi to unfence {node}: key {KEY[node]:#x} on a path of every LUN "
               f"(now {registered(c, node)})", START_TIMEOUT)
    # fence_scsi skips a path when the LU's reservation is already its own (register_dev):
    # the holder ends up registered on its first path only, the other node on each.
    before = {node: registered(c, node) for node in ("node1", "node2")}
    holder = reservation_key(c)
    print(f"paths holding each key after fence_scsi's on: {before}; reservation {holder:#x}")
    ons = {node: len(c["node1"].fence_successes(node, ("on",))) for node in before}
    c.switch_agent("fence_pr")
    for n in c.nodes:  # nothing can fall back to fence_scsi from here on
        n.sh("mv /usr/sbin/fence_scsi /usr/sbin/fence_scsi.migrated")
    # A changed device that provides unfencing is unfenced again by Pacemaker: fence_pr's
    # `on` keeps each key and the reservation, and registers the paths fence_scsi skipped.
    for node in before:
        c.wait(lambda node=node: len(c["node1"].fence_successes(node, ("on",))) > ons[node],
               f"Pacemaker's unfencing of {node} with fence_pr", START_TIMEOUT)
    assert registered(c, "node1") == registered(c, "node2") == [2, 2], (
        {node: registered(c, node) for node in before})
    assert reservation_key(c) == holder, "the reservation moved when only the agent changed"
    r = c["node1"].fence("node2")
    assert r.returncode == 0, f"{r.stdout}{r.stderr}\n{c.diagnostics()}"
    assert registered(c, "node2") == [0, 0], "node2's key survived fence_pr's off"
    assert registered(c, "node1") == [2, 2]
