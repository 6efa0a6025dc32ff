"""The three-node variant: a quorum cluster (no two_node) on a bridge, one LUN shared by all
three; every node unfences itself, node1 fences node3, the other two keep their keys."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fence_pr.keys import corosync_key

from ..fixtures.cluster import CLUSTER_NAME, Cluster
from ..fixtures.io import write_block
from ..fixtures.scenario import START_TIMEOUT, reset_luns
from ..fixtures.topology import check_paths, scsi_keys, settle, sh

# Left out of CI (`make lab-slow` runs it): kernel-independent, and CI's 50 min under load.
pytestmark = pytest.mark.extra

NODES = ("node1", "node2", "node3")
KEY = {n: corosync_key(CLUSTER_NAME, i) for i, n in enumerate(NODES, start=1)}


@pytest.fixture(scope="module")
def cl3(lio) -> Iterator[Cluster]:  # type: ignore[no-untyped-def]
    reset_luns(lio)
    for p in (0, 1):
        lio.add_path(3, p)
    lio.make_maps(3)
    check_paths(lio.maps)
    lun = lio.luns[0]
    c = Cluster(Path("/tmp/fence_pr-cluster3"),
                {f"node{n}": {"lun0": lio.maps[n][0]} for n in (1, 2, 3)})
    c.lun = lun  # type: ignore[attr-defined]
    try:
        with c.running():
            yield c
    finally:
        for m in lio.maps.pop(3):
            sh("dmsetup", "remove", "--retry", os.path.basename(m), check=False)
        for p in (0, 1):
            for each in lio.luns:
                each.paths.pop((3, p), None)
            t = lio.nexus.pop((3, p))
            lio.targets.remove(t)
            t.delete()
        settle()
        reset_luns(lio)


def count(c: Cluster, node: str) -> int:
    return scsi_keys(c.lun.paths[(2, 1)].dev).count(KEY[node])  # type: ignore[attr-defined]


def test_three_nodes_unfence_and_node1_fences_node3(cl3, capsys) -> None:  # type: ignore[no-untyped-def]
    c = cl3
    everyone = set(NODES)
    c.wait(lambda: all(n.online() == everyone for n in c.nodes), "3 nodes online",
           START_TIMEOUT)
    c.wait(lambda: [count(c, n) for n in NODES] == [2, 2, 2],
           "every node's key on both of its paths", START_TIMEOUT)
    t0 = time.monotonic()
    r = c["node1"].fence("node3")
    took = time.monotonic() - t0
    assert r.returncode == 0, f"{r.stdout}{r.stderr}\n{c.diagnostics()}"
    with capsys.disabled():
        print(f"\n[cluster3] stonith_admin --fence node3: {took:.2f}s", flush=True)
    assert [count(c, n) for n in NODES] == [2, 2, 0]
    lun = c.lun
    check_paths({n: [c[f"node{n}"].links["lun0"]] for n in (1, 2, 3)})
    assert write_block(lun.paths[(3, 0)].dev) == errno.EBADE
    assert write_block(lun.paths[(1, 0)].dev) == 0
    assert write_block(lun.paths[(2, 0)].dev) == 0
