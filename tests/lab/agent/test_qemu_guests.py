"""Real QEMU in front of the helper: two "guests" whose `scsi-block` disks are two hosts'
dm-multipath maps of one LUN, their PR commands sent by QEMU's own pr-manager-helper
client to fence_pr_helper running as nobody:disk with no capability.

Each guest is a qemu-system-x86_64 with the qtest accelerator and a virtio-scsi HBA, driven
by fixtures/qemu_guest.py as a guest's virtio_scsi driver would drive it (no nested kernel:
see that module).  The target's view is read with sg_persist on the lab's path devices.

CI runs the fence_pr_helper scenario; `make qemu-guests` also runs it with one of A's paths
failed and side by side with Debian's qemu-pr-helper as root (docs/helper.md).
"""

from __future__ import annotations

import os
import statistics
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fence_pr.helper import wire

from ..fixtures.prhelper import (
    QEMU_SOCKET,
    SOCKET,
    device_nodes,
    running_helper,
    running_qemu_pr_helper,
)
from ..fixtures.qemu_guest import ScsiResult, VirtioScsi, host_device, qemu_guest
from ..fixtures.topology import dm_fail_path, dm_reinstate_path, group_access, scsi_full_status

A, B = 0xA1A1, 0xB2B2
WE_RO = 5                  # SPC type: Write Exclusive, Registrants Only
GOOD, CHECK_CONDITION, RESERVATION_CONFLICT = 0, 2, 0x18
UNIT_ATTENTION = 6
LBA = 2048                 # where the guests write, away from anything the lab reads


@dataclass
class Outcome:
    """What one run of the scenario showed, from the guests and from the target."""
    latency: dict[str, list[float]] = field(default_factory=dict)
    registered: dict[int, int] = field(default_factory=dict)  # key: I_T nexuses at the target
    after: dict[int, int] = field(default_factory=dict)       # the same after the preempt
    b_write: int = -1
    a_writes: list[int] = field(default_factory=list)

    def row(self) -> str:
        lat = ", ".join(f"{k} {1000 * statistics.median(v):.0f} ms"
                        for k, v in sorted(self.latency.items()))
        return (f"A on {self.registered.get(A, 0)} path(s), B on {self.registered.get(B, 0)};"
                f" after PREEMPT AND ABORT A on {self.after.get(A, 0)}, B on "
                f"{self.after.get(B, 0)}; B's write status {self.b_write:#x}, A's writes "
                f"{[hex(s) for s in self.a_writes]}; {lat}")


def scsi(guest: VirtioScsi, cdb: bytes, data_out: bytes = b"", data_in: int = 0) -> ScsiResult:
    """One command as a Linux guest's SCSI midlayer sends it: a UNIT ATTENTION (power-on
    reset from QEMU, registrations preempted from the target) is taken and the command
    sent again."""
    for _ in range(4):
        r = guest.command(cdb, data_out, data_in)
        assert r.response == 0, f"virtio-scsi response {r.response} for {cdb.hex()}"
        if not (r.status == CHECK_CONDITION and r.sense_key[0] == UNIT_ATTENTION):
            return r
    raise AssertionError(f"{cdb.hex()} still gets UNIT ATTENTION after 4 tries: {r.sense_key}")


def pr_out(action: int, key: int = 0, sa_key: int = 0, scsi_type: int = 0) -> tuple[bytes, bytes]:
    cdb = bytes([0x5F, action, scsi_type, 0, 0]) + (24).to_bytes(4, "big") + b"\0"
    return cdb, struct.pack(">QQIBBH", key, sa_key, 0, 0, 0, 0)


def timed(outcome: Outcome, name: str, guest: VirtioScsi, cdb: bytes,
          data_out: bytes = b"", data_in: int = 0) -> ScsiResult:
    t0 = time.monotonic()
    r = scsi(guest, cdb, data_out, data_in)
    outcome.latency.setdefault(name, []).append(time.monotonic() - t0)
    return r


def block_size(guest: VirtioScsi) -> int:
    r = scsi(guest, bytes([0x25] + [0] * 9), data_in=8)  # READ CAPACITY(10)
    assert r.status == GOOD, r
    return int.from_bytes(r.data[4:8], "big")


def write(guest: VirtioScsi, size: int) -> int:
    cdb = bytes([0x2A, 0]) + LBA.to_bytes(4, "big") + bytes([0, 0, 1, 0])  # WRITE(10), 1 block
    return scsi(guest, cdb, data_out=b"g" * size).status


def nexuses(dev: str) -> dict[int, int]:
    """Registered I_T nexuses per key at the target."""
    got: dict[int, set[str]] = {}
    for key, tid in scsi_full_status(dev):
        got.setdefault(key, set()).add(tid)
    return {k: len(v) for k, v in got.items()}


@contextmanager
def two_guests(lab, helper: Path) -> Iterator[tuple[VirtioScsi, VirtioScsi]]:  # type: ignore[no-untyped-def]
    with qemu_guest(host_device(lab.maps[1][0]), "scsi-block", pr_helper=helper) as a, \
            qemu_guest(host_device(lab.maps[2][0]), "scsi-block", pr_helper=helper) as b:
        yield a, b


def scenario(lab, helper: Path) -> Outcome:  # type: ignore[no-untyped-def]
    """Guest A registers and reserves WE_RO, guest B registers, A PREEMPT AND ABORTs B."""
    probe = lab.luns[0].paths[(2, 0)].dev
    o = Outcome()
    with two_guests(lab, helper) as (ga, gb):
        size = block_size(ga)
        for name, g, (cdb, params) in (
                ("REGISTER", ga, pr_out(wire.OutAction.REGISTER, sa_key=A)),
                ("RESERVE", ga, pr_out(wire.OutAction.RESERVE, key=A, scsi_type=WE_RO)),
                ("REGISTER", gb, pr_out(wire.OutAction.REGISTER, sa_key=B))):
            r = timed(o, name, g, cdb, params)
            assert r.status == GOOD, (name, r)
        o.registered = nexuses(probe)
        assert write(gb, size) == GOOD, "B, registered under WE_RO, could not write"
        cdb, params = pr_out(wire.OutAction.PREEMPT_AND_ABORT, key=A, sa_key=B, scsi_type=WE_RO)
        r = timed(o, "PREEMPT AND ABORT", ga, cdb, params)
        assert r.status == GOOD, r
        o.after = nexuses(probe)
        o.b_write = write(gb, size)
        # dm sends each SG_IO down the path it picks then: several writes meet both paths.
        o.a_writes = [write(ga, size) for _ in range(4)]
    return o


def test_qemu_guests_preempt_and_abort_through_fence_pr_helper(clean_iscsi) -> None:  # type: ignore[no-untyped-def]
    lab = clean_iscsi
    with group_access(device_nodes(lab), "disk"), running_helper() as proc:
        caps = Path(f"/proc/{proc.pid}/status").read_text()
        assert "CapEff:\t0000000000000000" in caps and "Uid:\t65534" in caps, caps
        o = scenario(lab, SOCKET)
    print(f"[qemu guests] fence_pr_helper: {o.row()}")
    assert o.registered == {A: 2, B: 2}, o.registered  # every path of each guest's map
    assert o.after == {A: 2}, o.after                   # B gone from both of its paths
    assert o.b_write == RESERVATION_CONFLICT, o.row()
    assert o.a_writes == [GOOD] * 4, o.row()


@pytest.mark.extra
def test_qemu_guests_with_one_of_a_paths_failed(clean_iscsi) -> None:  # type: ignore[no-untyped-def]
    """A's second path dead and failed in dm (as multipathd's checker fails it): A's
    registration takes the live path, and B is still fenced on both of its paths."""
    lab = clean_iscsi
    down = lab.luns[0].paths[(1, 1)]
    with group_access(device_nodes(lab), "disk"), running_helper():
        down.set_state("offline")
        dm_fail_path(lab.maps[1][0], down)
        try:
            o = scenario(lab, SOCKET)
        finally:
            down.set_state("running")
            dm_reinstate_path(lab.maps[1][0], down)
    print(f"[qemu guests] fence_pr_helper, one of A's paths failed: {o.row()}")
    assert o.registered == {A: 1, B: 2} and o.after == {A: 1}, o.row()
    assert o.b_write == RESERVATION_CONFLICT and o.a_writes == [GOOD] * 4, o.row()


@pytest.mark.extra
def test_qemu_guests_side_by_side_with_qemu_pr_helper(clean_iscsi) -> None:  # type: ignore[no-untyped-def]
    """The same scenario through Debian's qemu-pr-helper as root (built without
    libmpathpersist): its SG_IO on a map reaches one path, so a guest's REGISTER covers one
    of the map's two nexuses.  The figures go to docs/helper.md."""
    lab = clean_iscsi
    with running_qemu_pr_helper() as proc:
        caps = Path(f"/proc/{proc.pid}/status").read_text()
        theirs = scenario(lab, QEMU_SOCKET)
    lab.reset()
    with group_access(device_nodes(lab), "disk"), running_helper():
        ours = scenario(lab, SOCKET)
    cap_line = next(line for line in caps.splitlines() if line.startswith("CapEff"))
    print(f"[qemu guests] qemu-pr-helper (uid {os.getuid()}, {cap_line}): {theirs.row()}")
    print(f"[qemu guests] fence_pr_helper (uid 65534, CapEff 0): {ours.row()}")
    assert theirs.registered == {A: 1, B: 1}, theirs.row()
    assert ours.registered == {A: 2, B: 2}, ours.row()
