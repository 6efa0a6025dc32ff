"""fence_pr end to end on SCSI: dm maps over tcm_loop and over iSCSI, and single-path disks.

Two nodes share the LUNs; each node reaches them through its own I_T nexuses.
Every claim is checked at the target with sg_persist and by real writes.
Over iSCSI the agent sends a real PREEMPT AND ABORT on a path device; over
tcm_loop a plain PREEMPT (LIO wedges otherwise, see docs/kernel-behaviour.md).
"""

from __future__ import annotations

import errno

import pytest

from ..fixtures.agentrun import KEYS, Node
from ..fixtures.iscsi import node_iqn
from ..fixtures.topology import check_paths, registered, scsi_full_status, writes


# dm over iSCSI on every kernel; the other two kinds differ from it in the device model, not in
# the kernel's PR code: single-path sd runs on the first kernel only (`once`), dm over
# tcm_loop in `make lab-slow` (`extra`), for CI's headroom (issue 13).
@pytest.fixture(params=[pytest.param("dm-tcm_loop", marks=pytest.mark.extra), "dm-iscsi",
                        pytest.param("sd-single-path", marks=pytest.mark.once)])
def pair(request):  # type: ignore[no-untyped-def]
    lab = request.getfixturevalue("clean_iscsi" if "iscsi" in request.param else "clean_lio")
    if request.param.startswith("dm-"):
        nodes = (Node("node1", lab.maps[1]), Node("node2", lab.maps[2]))
    else:
        nodes = (Node("node1", [lun.paths[(1, 0)].dev for lun in lab.luns]),
                 Node("node2", [lun.paths[(2, 0)].dev for lun in lab.luns]))
    nodes[0].paths_per_lun = 2 if request.param.startswith("dm") else 1  # type: ignore[attr-defined]
    return lab, nodes


# For the tests whose other kinds add nothing in CI: dm over iSCSI, the rest in `make lab-slow`.
DM_ISCSI_IN_CI = pytest.mark.parametrize(
    "pair", [pytest.param("dm-tcm_loop", marks=pytest.mark.extra), "dm-iscsi",
             pytest.param("sd-single-path", marks=pytest.mark.extra)], indirect=True)


def test_unfence_fence_status_list_rejoin(pair) -> None:  # type: ignore[no-untyped-def]
    lab, (n1, n2) = pair
    per_lun, luns = n1.paths_per_lun, len(lab.luns)
    for n in (n1, n2):
        r = n.run("on", n.name)
        assert r.rc == 0, r
    assert registered(lab.luns, n1.key) == [per_lun] * luns
    assert registered(lab.luns, n2.key) == [per_lun] * luns
    assert writes(lab.maps, n2.devices) == [0] * luns

    r = n1.run("status", "node2")
    assert r.rc == 0 and "ON" in r.out, r
    r = n1.run("list")
    assert r.rc == 0 and "node1" in r.out and "node2" in r.out, r
    check_paths(lab.maps)
    r = n1.run("monitor")
    assert r.rc == 0, r

    r = n1.pacemaker("off", "node2")
    assert r.rc == 0, r
    assert registered(lab.luns, n2.key) == [0] * len(lab.luns)
    assert registered(lab.luns, n1.key) == [per_lun] * luns
    assert writes(lab.maps, n2.devices) == [errno.EBADE] * luns
    assert writes(lab.maps, n1.devices) == [0] * luns
    r = n1.run("status", "node2")
    assert r.rc == 2 and "OFF" in r.out, r

    # The fenced node cannot strike back, and nothing changes when it tries.
    r = n2.run("off", "node1")
    assert r.rc == 1 and "not registered" in r.err, r
    assert registered(lab.luns, n1.key) == [per_lun] * luns

    r = n2.run("on", "node2")
    assert r.rc == 0, r
    assert registered(lab.luns, n2.key) == [per_lun] * luns
    assert writes(lab.maps, n2.devices) == [0] * luns


# Agent logic on the device kinds that stay in CI: the first kernel, dm over iSCSI only.
@pytest.mark.once
@DM_ISCSI_IN_CI
def test_refuses_to_fence_itself(pair) -> None:  # type: ignore[no-untyped-def]
    lab, (n1, _) = pair
    assert n1.run("on", "node1").rc == 0
    r = n1.run("off", "node1")
    assert r.rc == 1 and "itself" in r.err, r
    assert registered(lab.luns, KEYS["node1"]) == [n1.paths_per_lun] * len(lab.luns)


def test_fence_with_one_of_the_fencers_paths_down(pair) -> None:  # type: ignore[no-untyped-def]
    lab, (n1, n2) = pair
    assert n1.run("on", "node1").rc == 0 and n2.run("on", "node2").rc == 0
    down = [lun.paths[(1, 0)] for lun in lab.luns]
    for p in down:
        p.set_state("offline")
    try:
        r = n1.run("monitor")
        if n1.paths_per_lun == 2:
            assert r.rc == 1 and "degraded" in r.err.lower(), r
        r = n1.run("off", "node2")
        if n1.paths_per_lun == 1:
            # The fencer's only path is down: fencing must fail, loudly, naming the device.
            assert r.rc == 1 and any(p.dev in r.err for p in down), r
            assert registered(lab.luns, n2.key) == [1] * len(lab.luns)
        else:
            assert r.rc == 0, r
            assert registered(lab.luns, n2.key) == [0] * len(lab.luns)
            r = n1.run("status", "node2")
            assert r.rc == 2 and "OFF" in r.out, r
            r = n1.run("list-status")
            assert r.rc == 0 and "node2" in r.out, r
            r = n1.run("on", "node1")  # unfencing with a path down: done, path reported
            assert r.rc == 0 and "degraded" in r.err, r
    finally:
        for p in down:
            p.set_state("running")


# Every kernel (the no-op is decided from the keys read back, pr.h or its fallback), dm over
# iSCSI only: the single path adds nothing to it.
@DM_ISCSI_IN_CI
def test_on_twice_is_a_no_op(pair) -> None:  # type: ignore[no-untyped-def]
    lab, (n1, n2) = pair
    assert n1.run("on", "node1").rc == 0 and n2.run("on", "node2").rc == 0
    assert n1.run("on", "node1").rc == 0
    assert registered(lab.luns, n1.key) == [n1.paths_per_lun] * len(lab.luns)
    assert registered(lab.luns, n2.key) == [n1.paths_per_lun] * len(lab.luns)


@pytest.mark.once  # the new nexus is a kernel fact on every kernel (test_iscsi_facts)
def test_iscsi_relogin_repaired_by_on(clean_iscsi) -> None:  # type: ignore[no-untyped-def]
    """After an iSCSI logout/login the path is a new, unregistered nexus (fence-agents #517,
    #529, #558). `on` registers it; the old session's stale entry stays at the target."""
    lab = clean_iscsi
    n1 = Node("node1", lab.maps[1])
    assert n1.run("on", "node1").rc == 0
    lab.relogin(1, 1)
    lab.refresh_maps(1)
    new_isid = lab.isid(1, 1)
    probe = lab.luns[0].paths[(2, 0)].dev
    tid = f"{node_iqn(1)},i,{new_isid}"
    assert tid not in {t for _, t in scsi_full_status(probe)}
    r = n1.run("on", "node1")
    assert r.rc == 0, r
    assert (n1.key, tid) in set(scsi_full_status(probe))
