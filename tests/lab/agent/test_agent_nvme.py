"""fence_pr end to end on NVMe (nvmet over loop): per-host namespaces and a native-multipath head.

On 7.3 nvmet has reservations; on 6.12 it has none, and the agent must say so and change
nothing.  Keys are checked with nvme-cli's Reservation Report, not with fence_pr.
"""

from __future__ import annotations

import errno

import pytest

from ..fixtures.agentrun import Node
from ..fixtures.io import write_block
from ..fixtures.nvmet import nvme_keys
from ..fixtures.scenario import NVMET_RESV, assert_unsupported, heads_of, swap_nodes


def nodes(lab) -> tuple[Node, Node]:  # type: ignore[no-untyped-def]
    return tuple(Node(f"node{n}", [lab.dev(n, 0, nsid) for nsid in lab.nsids])  # type: ignore[return-value]
                 for n in (1, 2))


def registered(lab, key: int) -> list[int]:  # type: ignore[no-untyped-def]
    """Registrations of `key` per namespace, one per host, as the controller reports them."""
    return [nvme_keys(lab.dev(2, 1, nsid)).count(key) for nsid in lab.nsids]


def test_nvme_fence_cycle(clean_nvme) -> None:  # type: ignore[no-untyped-def]
    lab = clean_nvme
    n1, n2 = nodes(lab)
    if not NVMET_RESV:
        assert_unsupported(n1)
        return
    both = len(lab.nsids)
    for n in (n1, n2):
        r = n.run("on", n.name)
        assert r.rc == 0, r
    assert registered(lab, n1.key) == [1] * both  # once per host, not per controller
    assert registered(lab, n2.key) == [1] * both
    r = n1.run("monitor")
    assert r.rc == 0, r
    r = n1.run("list")
    assert r.rc == 0 and "node2" in r.out, r

    r = n1.pacemaker("off", "node2")
    assert r.rc == 0, r
    assert registered(lab, n2.key) == [0] * both
    # The fenced host is cut off on every controller, the survivor is not.
    assert [write_block(lab.dev(2, p, nsid)) for p in (0, 1) for nsid in lab.nsids] == \
        [errno.EBADE] * (2 * both)
    assert [write_block(d) for d in n1.devices] == [0] * both
    r = n1.run("status", "node2")
    assert r.rc == 2 and "OFF" in r.out, r
    r = n2.run("off", "node1")
    assert r.rc == 1 and "not registered" in r.err, r
    assert registered(lab, n1.key) == [1] * both

    r = n2.run("on", "node2")
    assert r.rc == 0, r
    assert registered(lab, n2.key) == [1] * both
    assert [write_block(d) for d in n2.devices] == [0] * both


def test_nvme_fencer_with_one_controller_gone(clean_nvme) -> None:  # type: ignore[no-untyped-def]
    """Without native multipath a controller is a device; the fencer names its live one."""
    lab = clean_nvme
    n1, n2 = nodes(lab)
    if not NVMET_RESV:
        assert_unsupported(n1)
        return
    assert n1.run("on", "node1").rc == 0 and n2.run("on", "node2").rc == 0
    lab.delete_controller(1, 0)
    n1_live = Node("node1", [lab.dev(1, 1, nsid) for nsid in lab.nsids])
    r = n1_live.run("off", "node2")
    assert r.rc == 0, r
    assert registered(lab, n2.key) == [0] * len(lab.nsids)


@pytest.mark.reloads_nvme_core
def test_native_multipath_head(clean_nvme) -> None:  # type: ignore[no-untyped-def]
    """node1 through a native-multipath head (2 controllers): one registration for the host,
    and the head keeps working with a controller gone."""
    lab = clean_nvme
    lab.set_multipath(True, nodes=(1,))
    heads = sorted({lab.dev(1, 0, nsid) for nsid in lab.nsids})
    assert heads == sorted({lab.dev(1, 1, nsid) for nsid in lab.nsids}), "one head per ns"
    n1 = Node("node1", heads)
    r = n1.run("on", "node1")
    if not NVMET_RESV:
        assert_unsupported(n1, r)
        return
    assert r.rc == 0, r
    assert [nvme_keys(h).count(n1.key) for h in heads] == [1] * len(heads)
    lab.delete_controller(1, 0)
    r = n1.run("monitor")
    assert r.rc == 0, r
    r = n1.run("status", "node1")
    assert r.rc == 0 and "ON" in r.out, r
    r = n1.run("on", "node1")
    assert r.rc == 0, r
    assert [nvme_keys(h).count(n1.key) for h in heads] == [1] * len(heads)


@pytest.mark.reloads_nvme_core
def test_fence_cycle_through_native_multipath_heads(clean_nvme) -> None:  # type: ignore[no-untyped-def]
    """on / off / status / list / on again, every node through its own multipath head.

    One kernel cannot hold two hosts' controllers apart under one head (a head takes every
    controller of the subsystem), so the nodes take turns: node2 registers through its head,
    its controllers go away (the registration stays at the target, it belongs to the host),
    node1 connects and fences it through node1's head, then node2 comes back and is refused.
    """
    lab = clean_nvme
    lab.set_multipath(True, nodes=(2,))
    if not NVMET_RESV:
        assert_unsupported(Node("node2", heads_of(lab, 2)))
        return
    n2 = Node("node2", heads_of(lab, 2))
    r = n2.run("on", "node2")
    assert r.rc == 0, r
    swap_nodes(lab, gone=2, back=1)
    n1 = Node("node1", heads_of(lab, 1))
    assert n1.run("on", "node1").rc == 0
    assert [sorted(nvme_keys(h)) for h in n1.devices] == [sorted([n1.key, n2.key])] * 2
    r = n1.run("list")
    assert r.rc == 0 and "node1" in r.out and "node2" in r.out, r
    assert n1.run("monitor").rc == 0
    lab.delete_controller(1, 0)  # the fencer with one path down
    r = n1.pacemaker("off", "node2")
    assert r.rc == 0, r
    assert [nvme_keys(h) for h in n1.devices] == [[n1.key]] * 2
    r = n1.run("status", "node2")
    assert r.rc == 2 and "OFF" in r.out, r
    assert [write_block(h) for h in n1.devices] == [0, 0]

    swap_nodes(lab, gone=1, back=2)
    n2 = Node("node2", heads_of(lab, 2))
    assert [write_block(h) for h in n2.devices] == [errno.EBADE] * 2
    r = n2.run("off", "node1")
    assert r.rc == 1 and "not registered" in r.err, r
    r = n2.run("on", "node2")
    assert r.rc == 0, r
    assert [write_block(h) for h in n2.devices] == [0, 0]


