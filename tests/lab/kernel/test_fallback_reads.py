"""The pre-6.19 read path (SG_IO PERSISTENT RESERVE IN, NVMe Reservation Report) agrees
with IOC_PR_READ_KEYS / READ_RESERVATION where both exist, and carries the agent alone
where the ioctls do not (6.12)."""

from __future__ import annotations

import os

import pytest

from fence_pr.pr import nvme_passthru, prh, sgio
from fence_pr.pr.errors import NotSupported
from fence_pr.pr.prtypes import PrType

from ..fixtures.agentrun import KEYS, NODE_KEYS, agent_argv
from ..fixtures.io import opened
from ..fixtures.scenario import kernel_at_least

K1, K2 = KEYS["node1"], KEYS["node2"]
WERO = PrType.WRITE_EXCLUSIVE_REG_ONLY


def test_scsi_sgio_matches_the_ioctls(clean_lio) -> None:  # type: ignore[no-untyped-def]
    lun = clean_lio.luns[0]
    a, b = lun.paths[(1, 0)].dev, lun.paths[(2, 0)].dev
    with opened(a) as fd:
        prh.register(fd, 0, K1, device=a)
        prh.reserve(fd, K1, WERO, device=a)
    with opened(b) as fd:
        prh.register(fd, 0, K2, device=b)
    with opened(a, os.O_RDONLY) as fd:
        keys, rsv = sgio.read_keys(fd, device=a), sgio.read_reservation(fd, device=a)
        assert sorted(keys.keys) == [K1, K2]
        assert rsv.key == K1 and rsv.type is WERO
        if kernel_at_least(6, 19):
            assert prh.read_keys(fd, device=a) == keys
            assert prh.read_reservation(fd, device=a) == rsv
        else:
            with pytest.raises(NotSupported):
                prh.read_keys(fd, device=a)


def test_nvme_report_matches_the_ioctls(clean_nvme) -> None:  # type: ignore[no-untyped-def]
    lab = clean_nvme
    a, b = lab.dev(1, 0, lab.nsids[0]), lab.dev(2, 0, lab.nsids[0])
    if not lab.has_resv:
        with opened(a, os.O_RDONLY) as fd, pytest.raises(NotSupported):
            nvme_passthru.read_keys(fd, device=a)
        return
    with opened(a) as fd:
        prh.register(fd, K1, K1, ignore_key=True, device=a)
        prh.reserve(fd, K1, WERO, device=a)
    with opened(b) as fd:
        prh.register(fd, K2, K2, ignore_key=True, device=b)
    with opened(a, os.O_RDONLY) as fd:
        keys = nvme_passthru.read_keys(fd, device=a)
        rsv = nvme_passthru.read_reservation(fd, device=a)
        assert sorted(keys.keys) == [K1, K2]
        assert rsv.key == K1 and rsv.type is WERO
        ioctl_keys = prh.read_keys(fd, device=a)
        assert sorted(ioctl_keys.keys) == sorted(keys.keys)
        assert ioctl_keys.generation == keys.generation
        assert prh.read_reservation(fd, device=a) == rsv


def test_agent_list_with_forced_fallback(clean_lio) -> None:  # type: ignore[no-untyped-def]
    """FENCE_PR_FORCE_FALLBACK=1 makes the agent read as it would on a pre-6.19 kernel."""
    devices = ",".join(clean_lio.maps[1])
    base = ["--devices", devices, "--node_keys", NODE_KEYS, "--local_node", "node1"]
    assert agent_argv("-o", "on", *base).rc == 0
    os.environ["FENCE_PR_FORCE_FALLBACK"] = "1"
    try:
        r = agent_argv("-o", "list-status", *base)
    finally:
        del os.environ["FENCE_PR_FORCE_FALLBACK"]
    assert r.rc == 0, r
    assert f"node1,0x{K1:x},on" in r.out.lower() and f"node2,0x{K2:x},off" in r.out.lower(), r


def test_unknown_keys_are_listed_as_such(clean_lio) -> None:  # type: ignore[no-untyped-def]
    stranger = 0x5EE0000000000042
    dev = clean_lio.luns[0].paths[(2, 1)].dev
    with opened(dev) as fd:
        prh.register(fd, 0, stranger, device=dev)
    r = agent_argv("-o", "list", "--devices", ",".join(clean_lio.maps[1]), "--node_keys",
                   NODE_KEYS, "--local_node", "node1")
    assert r.rc == 0 and f"unknown-0x{stranger:x}" in r.out, r
