"""pr-facts.md's NVMe section as executable checks, against nvmet over the loop transport.

nvmet implements reservations from 6.13 (`resv_enable`), so on the 6.12 lab
kernel the same tests assert that there are none, instead of skipping: a
fence_pr running there must meet exactly that.
"""

from __future__ import annotations

import errno
import os

import pytest

from fence_pr.pr import prh
from fence_pr.pr.errors import NotSupported, ReservationConflict
from fence_pr.pr.prtypes import Key, PrType

from ..fixtures.io import opened, write_block
from ..fixtures.nvmet import namespaces_of, nvme_keys
from ..fixtures.scenario import kernel_at_least

K1, K2 = 0xA1A1000000000001, 0xA1A1000000000002
WERO = PrType.WRITE_EXCLUSIVE_REG_ONLY
HAS_RESV = kernel_at_least(6, 13)
HAS_READ_IOCTLS = kernel_at_least(6, 19)
CONFLICT = 0x18


def register(dev: str, old: int, new: int, *, ignore_key: bool = False) -> None:
    with opened(dev) as fd:
        prh.register(fd, old, new, ignore_key=ignore_key, device=dev)


def keys_at(dev: str) -> list[Key]:
    with opened(dev, os.O_RDONLY) as fd:
        return prh.read_keys(fd, device=dev).keys


def assert_no_nvme_reservations(dev: str) -> None:
    """6.12: nvmet rejects every Reservation command; pr.h turns that into EINVAL."""
    with pytest.raises(NotSupported) as exc:
        register(dev, 0, K1)
    assert exc.value.code == -errno.EINVAL


def test_nvmet_reservations_need_6_13(nvme) -> None:  # type: ignore[no-untyped-def]
    assert (nvme.ns_dir(1) / "resv_enable").exists() == HAS_RESV
    assert nvme.has_resv == HAS_RESV


def test_read_keys_ioctl_presence(clean_nvme) -> None:  # type: ignore[no-untyped-def]
    dev = clean_nvme.dev(1, 0, 1)
    if HAS_READ_IOCTLS:
        assert keys_at(dev) == []
        with opened(dev, os.O_RDONLY) as fd:
            assert not prh.read_reservation(fd, device=dev).held
    else:
        with opened(dev, os.O_RDONLY) as fd, pytest.raises(NotSupported):
            prh.read_keys(fd, device=dev)


def test_registration_belongs_to_the_host(clean_nvme) -> None:  # type: ignore[no-untyped-def]
    """One REGISTER through one controller covers the host's other controllers too."""
    lab = clean_nvme
    if not HAS_RESV:
        assert_no_nvme_reservations(lab.dev(1, 0, 1))
        return
    register(lab.dev(1, 0, 1), 0, K1)
    assert nvme_keys(lab.dev(1, 1, 1)) == [K1], "seen through node 1's other controller"
    register(lab.dev(1, 1, 1), 0, K1)  # same key again through the other path: a no-op
    register(lab.dev(2, 0, 1), 0, K2)
    assert sorted(nvme_keys(lab.dev(2, 1, 1))) == [K1, K2]
    assert sorted(keys_at(lab.dev(1, 1, 1))) == [K1, K2], "one entry per host, not per path"
    assert nvme_keys(lab.dev(1, 0, 2)) == [], "registration is per namespace"


def test_register_to_zero_leaves_a_key_zero_registrant(clean_nvme) -> None:  # type: ignore[no-untyped-def]
    """pr.h has no NVMe unregister: old->0 is a Replace, and the host stays registered."""
    dev = clean_nvme.dev(1, 0, 1)
    if not HAS_RESV:
        assert_no_nvme_reservations(dev)
        return
    register(dev, 0, K1)
    register(dev, K1, 0)
    assert nvme_keys(dev) == [0]
    if HAS_READ_IOCTLS:
        assert keys_at(dev) == [0]
    for ignore in (False, True):  # old_key 0 is a plain Register either way
        with pytest.raises(ReservationConflict) as exc:
            register(dev, 0, K1, ignore_key=ignore)
        assert exc.value.code == CONFLICT


def test_ignore_key_needs_a_nonzero_old_key(clean_nvme) -> None:  # type: ignore[no-untyped-def]
    """IGNORE_KEY + old 0 conflicts with a held key; IGNORE_KEY + any non-zero old replaces it."""
    dev = clean_nvme.dev(1, 0, 1)
    if not HAS_RESV:
        assert_no_nvme_reservations(dev)
        return
    register(dev, 0, K1)
    with pytest.raises(ReservationConflict) as exc:
        register(dev, 0, K2, ignore_key=True)
    assert exc.value.code == CONFLICT
    assert nvme_keys(dev) == [K1]
    register(dev, 0xDEAD, K2, ignore_key=True)  # a wrong old key is ignored
    assert nvme_keys(dev) == [K2]


def test_reserve_with_ignore_key_is_rejected_by_nvmet(clean_nvme) -> None:  # type: ignore[no-untyped-def]
    """pr-facts says NVMe honours RESERVE + IGNORE_KEY; nvmet rejects IEKEY in Acquire
    (Invalid Field -> EINVAL), even with the right key, and takes no reservation."""
    dev = clean_nvme.dev(1, 0, 1)
    if not HAS_RESV:
        assert_no_nvme_reservations(dev)
        return
    register(dev, 0, K1)
    with opened(dev) as fd:
        with pytest.raises(NotSupported) as exc:
            prh.reserve(fd, K1, WERO, ignore_key=True, device=dev)
        assert exc.value.code == -errno.EINVAL
        assert not prh.read_reservation(fd, device=dev).held
        prh.reserve(fd, K1, WERO, device=dev)
        r = prh.read_reservation(fd, device=dev)
    assert (r.key, r.type) == (K1, WERO)


def test_preempt_abort_removes_the_victim_and_fences_its_writes(clean_nvme) -> None:  # type: ignore[no-untyped-def]
    lab = clean_nvme
    mine, victim = lab.dev(1, 0, 2), lab.dev(2, 0, 2)
    if not HAS_RESV:
        assert_no_nvme_reservations(mine)
        assert write_block(victim) == 0
        return
    register(mine, 0, K1)
    with opened(mine) as fd:
        prh.reserve(fd, K1, WERO, device=mine)
    register(victim, 0, K2)
    assert write_block(victim) == 0, "a registrant may write under WERO"
    with opened(mine) as fd:
        prh.preempt(fd, K1, K2, WERO, abort=True, device=mine)
    assert nvme_keys(mine) == [K1], "the victim host's registration is gone"
    assert write_block(victim) == errno.EBADE
    assert write_block(lab.dev(2, 1, 2)) == errno.EBADE, "on every path of the victim host"
    assert write_block(lab.dev(1, 1, 2)) == 0
    with opened(victim) as fd, pytest.raises(ReservationConflict):
        prh.preempt(fd, K2, K1, WERO, abort=True, device=victim)


def test_reconnected_controller_keeps_the_host_registration(clean_nvme) -> None:  # type: ignore[no-untyped-def]
    """Unlike an iSCSI re-login, a new controller of a registered host is covered at once."""
    lab = clean_nvme
    if not HAS_RESV:
        lab.delete_controller(1, 1)
        lab.reconnect(1, 1)
        assert_no_nvme_reservations(lab.dev(1, 1, 1))
        return
    register(lab.dev(1, 0, 1), 0, K1)
    lab.delete_controller(1, 1)
    assert nvme_keys(lab.dev(1, 0, 1)) == [K1]
    lab.reconnect(1, 1)
    assert nvme_keys(lab.dev(1, 1, 1)) == [K1]
    register(lab.dev(1, 1, 1), 0, K1)  # re-registering the same key is harmless


@pytest.mark.reloads_nvme_core
def test_native_multipath_head_registers_once(clean_nvme) -> None:  # type: ignore[no-untyped-def]
    """With nvme_core multipath=Y a host's two controllers share one head per namespace."""
    lab = clean_nvme
    try:
        lab.set_multipath(True, nodes=(1,))
        heads = [namespaces_of(lab.ctrls[(1, p)]) for p in (0, 1)]
        assert heads[0] == heads[1] and len(heads[0]) == 2, heads
        head = lab.dev(1, 0, 1)
        if not HAS_RESV:
            assert_no_nvme_reservations(head)
            return
        register(head, 0, K1)
        assert nvme_keys(head) == [K1]
        if HAS_READ_IOCTLS:
            assert keys_at(head) == [K1]
    finally:
        lab.set_multipath(False)
