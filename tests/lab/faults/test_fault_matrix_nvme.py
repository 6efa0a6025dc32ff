"""Path faults x actions on NVMe, through node1's native-multipath heads: every path down,
a path flapping during `on` and `off`, a path that appears after unfencing.

A head with no controller answers pr.h at once with EWOULDBLOCK (no queueing, unlike dm's
queue_if_no_path): every action must retry until power_timeout, then fail with exit 1 and
name the device.  The head outlives its controllers only with `delayed_removal_secs`
(Linux 6.16+); without it the device node vanishes, which resolve already refuses.
A registration is the host's, so a path that appears later needs no `on` (unlike SCSI).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from ..fixtures.agentrun import Node
from ..fixtures.nvmet import nvme_keys
from ..fixtures.scenario import (
    ACTIONS,
    BOUND_S,
    NVMET_RESV,
    assert_unsupported,
    heads_of,
    swap_nodes,
    timed,
)

pytestmark = pytest.mark.reloads_nvme_core


def both_registered(lab) -> tuple[Node, Node] | None:  # type: ignore[no-untyped-def]
    """node2 registers through its head, leaves; node1 connects and registers through its own
    (one kernel cannot hold two hosts apart under one head: test_agent_nvme.py)."""
    lab.set_multipath(True, nodes=(2,))
    n2 = Node("node2", heads_of(lab, 2))
    if not NVMET_RESV:
        assert_unsupported(n2)
        return None
    assert n2.run("on", "node2").rc == 0
    swap_nodes(lab, gone=2, back=1)
    n1 = Node("node1", heads_of(lab, 1))
    assert n1.run("on", "node1").rc == 0
    return n1, n2


def test_nvme_all_paths_down_then_a_late_path(clean_nvme) -> None:  # type: ignore[no-untyped-def]
    lab = clean_nvme
    nodes = both_registered(lab)
    if nodes is None:
        return
    n1, n2 = nodes
    knobs = [Path("/sys/block", Path(h).name, "delayed_removal_secs") for h in n1.devices]
    assert all(k.exists() for k in knobs), f"{knobs}: this kernel cannot keep a head without paths"
    try:
        for knob in knobs:
            knob.write_text("300\n")
        for path in range(lab.paths):
            lab.delete_controller(1, path)
        assert all(Path(h).exists() for h in n1.devices), "heads must outlive their paths"
        for action, target in ACTIONS:
            r, took = timed(n1, action, target)
            assert r.rc == 1 and "Traceback" not in r.err, (action, r)
            assert any(h in r.err for h in n1.devices), (action, r)
            assert "EAGAIN" in r.err or "no usable" in r.err, (action, r)
            assert took < BOUND_S, (action, took, r)
        # A path appears: the host's registration covers it at once, no `on` needed.
        lab.connect(1, 0)
        r = n1.run("monitor")
        assert r.rc == 0, r
        r = n1.run("status", "node2")
        assert r.rc == 0 and "ON" in r.out, r
        assert [sorted(nvme_keys(h)) for h in n1.devices] == [sorted([n1.key, n2.key])] * 2
    finally:
        # A pathless head would hold nvme_core for the delay: give it a path back, then let
        # the next disconnect remove it at once.
        if (1, 0) not in lab.ctrls:
            lab.connect(1, 0)
        for knob in knobs:
            knob.write_text("0\n")

def test_nvme_path_flapping_during_on_and_off(clean_nvme) -> None:  # type: ignore[no-untyped-def]
    lab = clean_nvme
    nodes = both_registered(lab)
    if nodes is None:
        return
    n1, _ = nodes
    stop = threading.Event()
    flaps = [0]

    def flap() -> None:
        while not stop.is_set():
            lab.delete_controller(1, 1)
            stop.wait(0.2)
            lab.connect(1, 1)
            flaps[0] += 1
            stop.wait(0.2)

    t = threading.Thread(target=flap)
    t.start()
    try:
        r_on, _ = timed(n1, "on", "node1")
        r_off, _ = timed(n1, "off", "node2")
        r_mon, _ = timed(n1, "monitor", None)
    finally:
        stop.set()
        t.join()
    assert flaps[0] >= 1, "the path never flapped during the run"
    assert r_on.rc == 0, r_on
    assert r_off.rc == 0, r_off
    assert r_mon.rc == 0, r_mon
    assert [nvme_keys(h) for h in n1.devices] == [[n1.key]] * len(n1.devices)
    r = n1.run("status", "node2")
    assert r.rc == 2 and "OFF" in r.out, r
