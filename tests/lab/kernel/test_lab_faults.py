"""The lab's fault helpers do what the agent tests will rely on them to do."""

from __future__ import annotations

import errno
import subprocess

import pytest

from fence_pr.pr import prh
from fence_pr.pr.errors import DeviceBusy, ReservationConflict

from ..fixtures.io import opened
from ..fixtures.topology import (
    dm_fail_path,
    dm_is_suspended,
    dm_path_states,
    dm_reinstate_path,
    dm_resume,
    dm_suspend,
    scsi_keys,
)

K1 = 0xA1A1000000000001


def test_suspended_map_answers_eagain(clean_lio) -> None:  # type: ignore[no-untyped-def]
    m = clean_lio.maps[1][2]
    dm_suspend(m)
    try:
        assert dm_is_suspended(m)
        with opened(m) as fd, pytest.raises(DeviceBusy) as exc:
            prh.register(fd, 0, K1, device=m)
        assert exc.value.code == -errno.EAGAIN
    finally:
        dm_resume(m)
    assert not dm_is_suspended(m)


def test_fail_and_reinstate_path(clean_lio) -> None:  # type: ignore[no-untyped-def]
    m = clean_lio.maps[2][2]
    p = clean_lio.luns[2].paths[(2, 1)]
    dm_fail_path(m, p)
    assert dm_path_states(m)[p.majmin] == "F"
    dm_reinstate_path(m, p)
    # No "A" check: udev probes the map on the PATH_REINSTATED uevent and on
    # these LIO maps that first I/O can fail the path again (seen on 7.3).
    dmesg = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
    assert f"Reinstating path {p.majmin}." in dmesg


def test_path_added_after_registration_is_not_registered(clean_lio) -> None:  # type: ignore[no-untyped-def]
    """The kernel never registers a path that joins a map later (pr-facts): fence_pr must."""
    lab = clean_lio
    m = lab.maps[1][0]
    with opened(m) as fd:
        prh.register(fd, 0, K1, device=m)
    new = lab.add_path_to_maps(1)
    try:
        dev = lab.luns[0].paths[(1, new)].dev
        assert len(dm_path_states(m)) == 3
        assert scsi_keys(dev) == [K1, K1]
        with opened(dev) as fd, pytest.raises(ReservationConflict):
            prh.register(fd, K1, K1, device=dev)
    finally:
        lab.remove_path(1, new)
    assert len(dm_path_states(m)) == 2
    assert len(lab.luns[0].node_paths(1)) == 2
