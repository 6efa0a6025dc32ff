"""A fence_mpath cluster moves to fence_pr, and back, on the same LUNs and keys.

multipathd manages each node's maps with `reservation_key file` (tests/lab/fixtures/peers.py
keeps node1's and node2's maps of one LUN apart).  The nodes are namespaces of one guest, and
multipathd's socket is abstract, so one per network namespace: socat carries each node's
`@/org/kernel/linux/storage/multipathd` to the guest's, as if every node had its own
multipathd.  fence_mpath's keys come from `pcmk_host_map="node1:1;node2:2"` (its `plug` is
the key); fence_pr takes the same keys as `node_keys=node1=1,node2=2`, so the switch keeps
every registration and the reservation: Pacemaker unfences again after a device change
anyway, and that `on` changes nothing at the target.  The LUNs are iSCSI: fence_mpath
always sends PREEMPT AND ABORT, which wedges LIO on tcm_loop paths (docs/kernel-behaviour.md;
seen here too: its `off` hung past Pacemaker's timeout, mpathpersist unkillable).  `make
peers` runs it (marker `extra`), CI does not: two cluster starts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..fixtures.cluster import Cluster
from ..fixtures.peers import Multipathd, MultipathdRelay
from ..fixtures.scenario import START_TIMEOUT
from ..fixtures.topology import scsi_keys, scsi_reservation_key

pytestmark = pytest.mark.extra

KEY = {"node1": 0x1, "node2": 0x2}
MPATH = {"pcmk_host_map": "node1:1;node2:2"}
PR = {"node_keys": "node1=1,node2=2"}


@contextlib.contextmanager
def mpath_cluster(lab, agent_type: str,  # type: ignore[no-untyped-def]
                  params: dict[str, str]) -> Iterator[Cluster]:
    """Two nodes over their dm maps of the first two LUNs (clean_iscsi's), multipathd
    managing every map and reachable from each node, `agent_type` the stonith resource's
    agent."""
    luns = lab.luns[:2]
    links = {f"node{n}": {f"lun{lun.index}": lab.maps[n][lun.index] for lun in luns}
             for n in (1, 2)}
    mpd = Multipathd(lab, {1: KEY["node1"], 2: KEY["node2"]})
    relay = MultipathdRelay()
    c = Cluster(Path(f"/tmp/fence_pr-migration-{agent_type}"), links,
                stonith_params=params, agent_type=agent_type)
    c.luns = luns  # type: ignore[attr-defined]
    try:
        c.build()
        for n in c.nodes:  # before the cluster starts: its first `on` already asks multipathd
            relay.into(n)
        c.start()
        yield c
    finally:
        c.teardown()
        relay.close()
        mpd.stop()


def registered(c: Cluster, node: str) -> list[int]:
    """Paths holding `node`'s key, per LUN, as the target says."""
    return [scsi_keys(lun.paths[(1, 0)].dev).count(KEY[node])
            for lun in c.luns]  # type: ignore[attr-defined]


def reservation_key(c: Cluster) -> int:
    """The key holding LUN 0's reservation, as the target says."""
    return scsi_reservation_key(c.luns[0].paths[(1, 0)].dev)  # type: ignore[attr-defined]


def both_unfenced(c: Cluster, by: str) -> dict[str, list[int]]:
    for node in KEY:
        c.wait(lambda node=node: registered(c, node) == [2, 2],
               f"{by} to unfence {node}: key {KEY[node]:#x} on both paths of both LUNs "
               f"(now {registered(c, node)})", START_TIMEOUT)
    return {node: registered(c, node) for node in KEY}


def switch(c: Cluster, agent_type: str, params: dict[str, str], drop: tuple[str, ...],
           gone: str) -> None:
    """Only the agent and where its keys are written change; the old agent is then taken
    from the nodes, so nothing can fall back to it; Pacemaker's new unfencing is awaited."""
    ons = {node: len(c["node1"].fence_successes(node, ("on",))) for node in KEY}
    c.switch_agent(agent_type, params, drop)
    for n in c.nodes:
        n.sh(f"mv /usr/sbin/{gone} /usr/sbin/{gone}.migrated")
    for node in KEY:
        c.wait(lambda node=node: len(c["node1"].fence_successes(node, ("on",))) > ons[node],
               f"Pacemaker's unfencing of {node} with {agent_type}", START_TIMEOUT)


@pytest.mark.parametrize(("first", "then"), [
    (("fence_mpath", MPATH, ("node_keys",)), ("fence_pr", PR, ("pcmk_host_map",))),
    (("fence_pr", PR, ("pcmk_host_map",)), ("fence_mpath", MPATH, ("node_keys",))),
], ids=["fence_mpath-to-fence_pr", "fence_pr-to-fence_mpath"])
def test_one_agent_unfences_then_the_other_fences_with_the_same_keys(  # type: ignore[no-untyped-def]
        clean_iscsi, first: tuple[str, dict[str, str], tuple[str, ...]],
        then: tuple[str, dict[str, str], tuple[str, ...]]) -> None:
    """`first` unfences both nodes; only the agent and where its keys are written change to
    `then` (the other agent's key option dropped), which fences node2."""
    agent, params, _ = first
    new_agent, new_params, drop = then
    with mpath_cluster(clean_iscsi, agent, params) as c:
        before = both_unfenced(c, agent)
        holder = reservation_key(c)
        switch(c, new_agent, new_params, drop, gone=agent)
        assert {node: registered(c, node) for node in KEY} == before
        assert reservation_key(c) == holder, "the reservation moved when the agent changed"
        r = c["node1"].fence("node2")
        assert r.returncode == 0, f"{r.stdout}{r.stderr}\n{c.diagnostics()}"
        assert registered(c, "node2") == [0, 0], f"node2's key survived {new_agent}'s off"
        assert registered(c, "node1") == [2, 2]
