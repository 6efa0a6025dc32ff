"""Every action but `off` visits every device and reports each one (issue 19).

The session's LIO lab: 3 LUNs, node 1 reaches each over 2 tcm_loop paths through its own
dm-multipath map.  Node 1's path 0 is one SCSI host for every LUN, so taking it offline
kills that path on all three maps at once, as a dead link does.  Only `off` stops at the
first device (the arbiter, the lowest WWID): that is tested in test_reliability.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..fixtures.agentrun import Node
from ..fixtures.topology import ScsiLun, ScsiPath, scsi_keys

# `make lab-slow`: acting on every device is the agent's own logic, the same on every kernel;
# out of CI for time (README, what runs where).
pytestmark = pytest.mark.extra


@pytest.fixture
def lab(clean_lio) -> Iterator[object]:  # type: ignore[no-untyped-def]
    yield clean_lio


def first_lun(lab) -> ScsiLun:  # type: ignore[no-untyped-def]
    """The device fence_pr takes first: it orders devices by WWID (devices.resolve_all)."""
    return min(lab.luns, key=lambda lun: lun.wwid)  # type: ignore[no-any-return]


def offline(paths: list[ScsiPath]) -> None:
    for p in paths:
        p.set_state("offline")


def keys_on(lun: ScsiLun) -> list[int]:
    """Registrations, read at the LUN through node 2's path 1 (never taken down here)."""
    return scsi_keys(lun.paths[(2, 1)].dev)


def test_monitor_names_every_dead_path_on_every_map(lab) -> None:  # type: ignore[no-untyped-def]
    n1 = Node("node1", lab.maps[1])
    assert n1.run("on", "node1").rc == 0
    dead = [lun.paths[(1, 0)] for lun in lab.luns]
    offline(dead)
    r = n1.run("monitor")
    assert r.rc == 1, r
    for p in dead:
        assert f"{p.dev}: SCSI state offline" in r.err, (p.dev, r)
    n = len(lab.luns)
    assert f"monitor: {n} device(s): 0 ok, {n} degraded, 0 failed" in r.err, r


def test_validate_all_names_both_bad_devices(lab) -> None:  # type: ignore[no-untyped-def]
    n1 = Node("node1", lab.maps[1])
    first = first_lun(lab)  # the arbiter of old, which hid every problem after it
    bad = [first, next(lun for lun in lab.luns if lun is not first)]
    for lun in bad:
        offline(lun.node_paths(1))
    r = n1.run("validate-all")
    assert r.rc == 1, r
    for lun in bad:
        assert lab.maps[1][lun.index] in r.err, (lun.index, r)
    n = len(lab.luns)
    assert f"validate-all: {n} device(s): {n - 2} ok, 0 degraded, 2 failed" in r.err, r


def test_on_registers_the_others_when_the_first_device_is_down(lab) -> None:  # type: ignore[no-untyped-def]
    n1 = Node("node1", lab.maps[1])
    first = first_lun(lab)
    offline(first.node_paths(1))
    r = n1.run("on", "node1")
    assert r.rc == 1 and f"on failed on {lab.maps[1][first.index]}" in r.err, r
    for lun in lab.luns:
        want = 0 if lun is first else 2  # both of node 1's paths on every other LUN
        assert keys_on(lun).count(n1.key) == want, (lun.index, keys_on(lun))


def test_list_status_shows_what_the_others_show_and_fails(lab) -> None:  # type: ignore[no-untyped-def]
    n1, n2 = Node("node1", lab.maps[1]), Node("node2", lab.maps[2])
    assert n1.run("on", "node1").rc == 0 and n2.run("on", "node2").rc == 0
    first = first_lun(lab)
    offline(first.node_paths(1))
    r = n1.run("list-status")
    assert r.rc == 1, r
    lines = r.out.splitlines()
    assert any(line.startswith("node1,") and line.endswith(",on") for line in lines), r
    assert any(line.startswith("node2,") and line.endswith(",on") for line in lines), r
    assert f"not read: {lab.maps[1][first.index]}" in r.err, r


def test_status_is_on_from_any_device_and_never_off_unread(lab) -> None:  # type: ignore[no-untyped-def]
    n1, n2 = Node("node1", lab.maps[1]), Node("node2", lab.maps[2])
    assert n1.run("on", "node1").rc == 0
    first = first_lun(lab)
    offline(first.node_paths(1))
    # node2 is registered nowhere, and the first device cannot say: unknown, not OFF.
    r = n1.run("status", "node2")
    assert r.rc == 1 and "status of node2 unknown" in r.err, r
    assert n2.run("on", "node2").rc == 0
    # node2's key is on the devices that answer: ON, whatever the first one would say.
    r = n1.run("status", "node2")
    assert r.rc == 0 and "ON" in r.out, r
