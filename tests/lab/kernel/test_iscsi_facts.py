"""iSCSI (LIO target + open-iscsi) smoke facts: the real-transport cases tcm_loop cannot show.

A node's paths are separate iSCSI sessions (I_T nexuses); re-login creates a new
nexus (new ISID) that nobody has registered, while the old registration lingers.
"""

from __future__ import annotations

import errno

import pytest

from fence_pr.pr import prh
from fence_pr.pr.errors import ReservationConflict
from fence_pr.pr.prtypes import PrType

from ..fixtures.io import opened, write_block
from ..fixtures.iscsi import node_iqn
from ..fixtures.topology import dm_path_states, scsi_full_status, scsi_keys

K1, K2 = 0xA1A1000000000001, 0xA1A1000000000002
WERO = PrType.WRITE_EXCLUSIVE_REG_ONLY


def register(dev: str, old: int, new: int) -> None:
    with opened(dev) as fd:
        prh.register(fd, old, new, device=dev)


def test_register_through_a_map_covers_each_session(clean_iscsi) -> None:  # type: ignore[no-untyped-def]
    lab = clean_iscsi
    register(lab.maps[1][0], 0, K1)
    lun = lab.luns[0]
    regs = scsi_full_status(lun.paths[(2, 0)].dev)
    want = {f"{node_iqn(1)},i,{lab.isid(1, p)}" for p in (0, 1)}
    assert sorted(k for k, _ in regs) == [K1, K1]
    assert {tid for _, tid in regs} == want, regs


def test_preempt_abort_on_a_raw_iscsi_path(clean_iscsi) -> None:  # type: ignore[no-untyped-def]
    """Safe on iSCSI (on a raw tcm_loop path it deadlocks LIO); the victim's writes get EBADE."""
    lun = clean_iscsi.luns[1]
    mine, victim = lun.paths[(1, 0)].dev, lun.paths[(2, 0)].dev
    register(mine, 0, K1)
    with opened(mine) as fd:
        prh.reserve(fd, K1, WERO, device=mine)
    register(victim, 0, K2)
    assert write_block(victim) == 0
    with opened(mine) as fd:
        prh.preempt(fd, K1, K2, WERO, abort=True, device=mine)
    assert scsi_keys(mine) == [K1]
    assert write_block(victim) == errno.EBADE
    assert write_block(lun.paths[(2, 1)].dev) == errno.EBADE
    assert write_block(mine) == 0


def test_relogin_leaves_the_new_session_unregistered(clean_iscsi) -> None:  # type: ignore[no-untyped-def]
    """After logout/login the path is a new, unregistered nexus; the old entry stays behind."""
    lab = clean_iscsi
    lun = lab.luns[0]
    register(lab.maps[1][0], 0, K1)
    old_isid = lab.isid(1, 1)
    old_dev = lun.paths[(1, 1)].dev
    lab.relogin(1, 1)
    new_isid = lab.isid(1, 1)
    new = lun.paths[(1, 1)]
    assert new_isid != old_isid
    print(f"re-login: {old_dev} {old_isid} -> {new.dev} {new_isid}")
    tids = {tid for _, tid in scsi_full_status(new.dev)}
    assert f"{node_iqn(1)},i,{old_isid}" in tids, "stale registration of the old session"
    assert f"{node_iqn(1)},i,{new_isid}" not in tids
    print(f"map after re-login, before reload: {dm_path_states(lab.maps[1][0])}")
    with opened(new.dev) as fd, pytest.raises(ReservationConflict):
        prh.register(fd, K1, K1, device=new.dev)  # needs a registered nexus
    # The repair fence_pr must do: register the new nexus (and reload the map).
    register(new.dev, 0, K1)
    lab.refresh_maps(1)
    assert new.majmin in dm_path_states(lab.maps[1][0])
    assert scsi_keys(new.dev) == [K1, K1, K1]
