"""../shared/pr-facts.md as executable checks on the lab kernel.

These pin down what the kernel itself does (no fence_pr logic involved beyond
the raw pr.h binding), so that the agent's workarounds are justified by
behaviour seen here, not by reading the source.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from fence_pr.pr import _ioctl, prh
from fence_pr.pr.errors import IoError, NotSupported, PermissionDenied, PrError, ReservationConflict
from fence_pr.pr.prtypes import PrType

from ..fixtures.io import opened, write_block
from ..fixtures.scenario import kernel_at_least
from ..fixtures.topology import ScratchDisk, scsi_keys

K1, K2 = 0xA1A1000000000001, 0xA1A1000000000002
WERO = PrType.WRITE_EXCLUSIVE_REG_ONLY
HAS_READ_IOCTLS = kernel_at_least(6, 19)


def test_read_keys_ioctl_presence(clean_lio) -> None:  # type: ignore[no-untyped-def]
    """IOC_PR_READ_KEYS exists from 6.19 on; older kernels answer ENOTTY (-> NotSupported)."""
    dev = clean_lio.luns[0].paths[(1, 0)].dev
    with opened(dev) as fd:
        if HAS_READ_IOCTLS:
            assert prh.read_keys(fd, device=dev).keys == []
            assert not prh.read_reservation(fd, device=dev).held
        else:
            with pytest.raises(NotSupported):
                prh.read_keys(fd, device=dev)


def test_scsi_registration_is_per_path_and_read_keys_lists_duplicates(clean_lio) -> None:  # type: ignore[no-untyped-def]
    lun = clean_lio.luns[0]
    p0, p1 = lun.node_paths(1)
    with opened(p0.dev) as fd:
        prh.register(fd, 0, K1, device=p0.dev)
    assert scsi_keys(p1.dev) == [K1], "one registration: only the path it was sent down"
    with opened(p1.dev) as fd:
        prh.register(fd, 0, K1, device=p1.dev)
    assert scsi_keys(p0.dev) == [K1, K1]
    if HAS_READ_IOCTLS:
        with opened(p0.dev, os.O_RDONLY) as fd:
            assert prh.read_keys(fd, device=p0.dev).keys == [K1, K1]
            # Short buffer: num_keys comes back as the total, only 1 entry filled.
            arr = (ctypes.c_uint64 * 1)()
            buf = bytearray(prh.pr_read_keys(0, 1, ctypes.addressof(arr)))
            assert _ioctl.call(fd, prh.IOC_PR_READ_KEYS, buf) == 0
            out = prh.pr_read_keys.from_buffer(buf)
            assert out.num_keys == 2 and arr[0] == K1


def ptpl_active(dev: str) -> int:
    """PTPL_A of REPORT CAPABILITIES: did the last REGISTER ask the target to keep the
    registrations through power loss (APTPL)?"""
    out = subprocess.run(["sg_persist", "-n", "--in", "--report-capabilities", dev],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r"\(PTPL_A\):\s*(\d)", out)
    assert m, f"no PTPL_A in sg_persist's answer:\n{out}"
    return int(m.group(1))


def test_sd_sets_aptpl_on_every_register(clean_lio) -> None:  # type: ignore[no-untyped-def]
    """Linux's sd sends every pr.h REGISTER with APTPL=1, so fence_scsi's `aptpl` option has
    nothing left to choose: a REGISTER without it (sg_persist, no -Z) leaves PTPL_A at 0, the
    next one through pr.h sets it."""
    p0, p1 = clean_lio.luns[0].node_paths(1)
    subprocess.run(["sg_persist", "-n", "--out", "--register-ignore", f"--param-sark=0x{K1:x}",
                    p0.dev], capture_output=True, check=True)
    assert ptpl_active(p0.dev) == 0, "sg_persist without -Z asked for APTPL"
    with opened(p1.dev) as fd:
        prh.register(fd, 0, K1, device=p1.dev)
    assert ptpl_active(p0.dev) == 1, "a pr.h REGISTER did not set APTPL"
    assert scsi_keys(p0.dev) == [K1, K1]


def test_dm_register_rollback_with_a_dead_path(clean_lio) -> None:  # type: ignore[no-untyped-def]
    """REGISTER through a map with one dead path fails and leaves NO path registered."""
    lun = clean_lio.luns[0]
    mapdev = clean_lio.maps[1][0]
    good, dead = lun.node_paths(1)
    dead.set_state("offline")
    with opened(mapdev) as fd, pytest.raises(PrError) as exc:
        prh.register(fd, 0, K1, device=mapdev)
    dead.set_state("running")
    print(f"dm REGISTER with a dead path: {type(exc.value).__name__} code={exc.value.code}")
    assert scsi_keys(good.dev) == [], "dm rolled the good path back too"


def test_dm_register_reaches_every_path(clean_lio) -> None:  # type: ignore[no-untyped-def]
    mapdev = clean_lio.maps[1][0]
    with opened(mapdev) as fd:
        prh.register(fd, 0, K1, device=mapdev)
    assert scsi_keys(clean_lio.luns[0].paths[(1, 0)].dev) == [K1, K1]


def test_fenced_write_fails_with_ebade_survivor_writes(clean_lio) -> None:  # type: ignore[no-untyped-def]
    """After PREEMPT_ABORT (through dm: plain PREEMPT) the victim's writes get EBADE."""
    m1, m2 = clean_lio.maps[1][1], clean_lio.maps[2][1]
    with opened(m1) as fd:
        prh.register(fd, 0, K1, device=m1)
        prh.reserve(fd, K1, WERO, device=m1)
    with opened(m2) as fd:
        prh.register(fd, 0, K2, device=m2)
    assert write_block(m2) == 0, "a registrant may write under WERO"
    with opened(m1) as fd:
        prh.preempt(fd, K1, K2, WERO, abort=True, device=m1)
    assert K2 not in scsi_keys(clean_lio.luns[1].paths[(1, 0)].dev)
    assert write_block(m2) == errno.EBADE
    assert write_block(clean_lio.luns[1].paths[(2, 0)].dev) == errno.EBADE
    assert write_block(m1) == 0


def test_reservation_conflict_is_a_positive_status(clean_lio) -> None:  # type: ignore[no-untyped-def]
    """A fenced (unregistered) node's PREEMPT answers PR_STS_RESERVATION_CONFLICT (0x18)."""
    lun = clean_lio.luns[2]
    mine, victim = lun.paths[(1, 0)].dev, lun.paths[(2, 0)].dev
    with opened(mine) as fd:
        prh.register(fd, 0, K1, device=mine)
        prh.reserve(fd, K1, WERO, device=mine)
    with opened(victim) as fd:
        prh.register(fd, 0, K2, device=victim)
    with opened(mine) as fd:
        prh.preempt(fd, K1, K2, WERO, device=mine)
    with opened(victim) as fd, pytest.raises(ReservationConflict) as exc:
        prh.preempt(fd, K2, K1, WERO, abort=True, device=victim)
    assert exc.value.code == 0x18
    assert scsi_keys(mine) == [K1]


def test_reserve_by_unregistered_initiator(clean_lio) -> None:  # type: ignore[no-untyped-def]
    """pr-facts does not say; LIO answers RESERVE from an unregistered nexus as shown here."""
    dev = clean_lio.luns[2].paths[(1, 0)].dev
    with opened(dev) as fd, pytest.raises(PrError) as exc:
        prh.reserve(fd, K1, WERO, device=dev)
    print(f"RESERVE unregistered: {type(exc.value).__name__} code={exc.value.code:#x}")
    assert type(exc.value) in (ReservationConflict, IoError)


def test_reserve_with_ignore_key_not_supported_on_scsi(clean_lio) -> None:  # type: ignore[no-untyped-def]
    dev = clean_lio.luns[2].paths[(1, 0)].dev
    with opened(dev) as fd:
        prh.register(fd, 0, K1, device=dev)
        with pytest.raises(NotSupported):
            prh.reserve(fd, K1, WERO, ignore_key=True, device=dev)


def test_partition_is_refused_with_eperm(lio) -> None:  # type: ignore[no-untyped-def]
    """Even root gets EPERM on a partition; fence_pr names the whole disk instead."""
    disk = ScratchDisk("partitioned")
    try:
        subprocess.run(["sfdisk", "-q", disk.dev], input="label: dos\n,1M\n", text=True,
                       check=True)
        subprocess.run(["udevadm", "settle"], check=False)
        part = disk.dev + "1"
        with opened(part) as fd, pytest.raises(PermissionDenied) as exc:
            prh.register(fd, 0, K1, device=part)
        assert exc.value.code == -errno.EPERM
    finally:
        disk.delete()


UNPRIV = """
import os, sys
sys.path.insert(0, {root!r})
from fence_pr.pr import prh
dev = sys.argv[1]
fd = os.open(dev, os.O_RDWR)
prh.register(fd, 0, {key}, device=dev)
print("registered")
"""


def test_unprivileged_writer_may_register(clean_lio) -> None:  # type: ignore[no-untyped-def]
    """No capabilities at all, but a write-open descriptor: the "out" ioctls are allowed."""
    dev = clean_lio.luns[2].paths[(1, 1)].dev
    # The checkout may sit in a directory only root can enter (mktemp -d): give the
    # unprivileged process its own world-readable copy of the package.  Without its
    # bytecode: the other lane's guest rewrites __pycache__ in the shared checkout, and a .pyc
    # listed here and replaced there is gone by the time it is copied (ENOENT, 2026-12-06).
    root = tempfile.mkdtemp()
    shutil.copytree(Path(prh.__file__).parents[1], Path(root) / "fence_pr",  # the package
                    ignore=shutil.ignore_patterns("__pycache__"))
    for d, _, files in os.walk(root):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    os.chmod(dev, 0o666)
    try:
        code = UNPRIV.format(root=root, key=K2)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            "--inh-caps=-all", "--bounding-set=-all", "/usr/bin/python3",
                            "-c", code, dev], capture_output=True, text=True)
    finally:
        os.chmod(dev, 0o660)
    assert r.returncode == 0, r.stderr
    assert K2 in scsi_keys(dev)
