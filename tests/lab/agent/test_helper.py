"""fence_pr_helper on real dm-multipath maps over LIO iSCSI, commands sent as QEMU sends
them (fixtures/prhelper.py), the helper running as nobody:disk with no capability.  The
target's view is read with sg_persist on the path devices, not through the helper.

Two "hosts": node 1's map of LUN 0 (guest A) and node 2's (guest B), each over its own two
iSCSI sessions.  Real QEMU in front of the helper: test_qemu_guests.py.

The guest's devtmpfs leaves device nodes root-only; `group_access` gives the helper's group
what the udev rule gives it."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from fence_pr.helper import wire

from ..fixtures.io import write_block
from ..fixtures.prhelper import Client, device_nodes, running_helper
from ..fixtures.scenario import kernel_at_least
from ..fixtures.topology import (
    group_access,
    scsi_full_status,
    scsi_keys,
    write_after_checks,
)

A, B = 0xA1A1, 0xB2B2
# IOC_PR_READ_KEYS / READ_RESERVATION are 6.19+; before, reads fall back to SG_IO, which an
# unprivileged helper may not send: it answers ILLEGAL REQUEST (README, the helper).
PR_READS = kernel_at_least(6, 19)
WE_RO = 5  # SPC type: Write Exclusive, Registrants Only


def test_guest_a_preempts_and_aborts_guest_b_through_the_helper(clean_iscsi) -> None:  # type: ignore[no-untyped-def]
    lab = clean_iscsi
    lun = lab.luns[0]
    map_a, map_b = lab.maps[1][0], lab.maps[2][0]
    probe = lun.paths[(1, 0)].dev
    with group_access(device_nodes(lab), "disk"), running_helper() as proc:
        a, b = Client(), Client()
        try:
            # It serves only after dropping privilege: a finished handshake proves the drop.
            caps = Path(f"/proc/{proc.pid}/status").read_text()
            assert "CapEff:\t0000000000000000" in caps and "Uid:\t65534" in caps, caps
            assert a.out(map_a, wire.OutAction.REGISTER_AND_IGNORE, sa_key=A).status == 0
            assert a.out(map_a, wire.OutAction.RESERVE, key=A, scsi_type=WE_RO).status == 0
            assert b.out(map_b, wire.OutAction.REGISTER, sa_key=B).status == 0
            # Every path of each map registered: one I_T nexus per iSCSI session.
            assert sorted(scsi_keys(probe)) == [A, A, B, B]
            nexus = {key: sorted(tid for k, tid in scsi_full_status(probe) if k == key)
                     for key in (A, B)}
            assert len(set(nexus[A])) == 2 and len(set(nexus[B])) == 2, nexus
            if PR_READS:
                assert a.read_keys(map_a) == scsi_keys(probe)
                assert a.read_reservation(map_a) == (A, WE_RO)
            else:
                refused = a.command(map_a, bytes([0x5E, 0, 0, 0, 0, 0, 0, 0x10, 0]))
                assert (refused.status, refused.sense_key) == (2, (0x05, 0x20, 0)), refused
            # B cannot take A's reservation: RESERVATION CONFLICT, no sense.
            conflict = b.out(map_b, wire.OutAction.RESERVE, key=B, scsi_type=WE_RO)
            assert (conflict.status, conflict.sense) == (0x18, bytes(96)), conflict
            # A read-only descriptor cannot change anything, as with qemu-pr-helper.
            ro = b.out(map_b, wire.OutAction.PREEMPT_AND_ABORT, key=B, sa_key=A,
                       scsi_type=WE_RO, flags=os.O_RDONLY)
            assert (ro.status, ro.sense_key) == (2, (0x05, 0x20, 0)), ro
            assert sorted(scsi_keys(probe)) == [A, A, B, B]
            assert write_after_checks(lab.maps, map_b) == 0, "B registered under WE_RO writes"
            got = a.out(map_a, wire.OutAction.PREEMPT_AND_ABORT, key=A, sa_key=B,
                        scsi_type=WE_RO)
            assert got.status == 0, got
            assert sorted(scsi_keys(probe)) == [A, A]
            for p in lun.node_paths(2):
                assert write_block(p.dev) == errno.EBADE, p.dev
            assert write_after_checks(lab.maps, map_a) == 0
        finally:
            a.close()
            b.close()


def test_register_through_a_map_with_a_path_offline(clean_iscsi) -> None:  # type: ignore[no-untyped-def]
    """The kernel's dm REGISTER rolls back every path when one fails; the helper registers
    the live path and says so in its log."""
    lab = clean_iscsi
    lun = lab.luns[0]
    down = lun.paths[(1, 1)]
    probe = lun.paths[(2, 0)].dev
    with group_access(device_nodes(lab), "disk"), running_helper() as proc:
        c = Client()
        try:
            down.set_state("offline")
            try:
                r = c.out(lab.maps[1][0], wire.OutAction.REGISTER_AND_IGNORE, sa_key=A)
            finally:
                down.set_state("running")
            assert r.status == 0, r
            assert scsi_keys(probe) == [A]
        finally:
            c.close()
    log = proc.stderr.read() if proc.stderr else ""
    assert f"{down.dev}" in log and "left out" in log, log
