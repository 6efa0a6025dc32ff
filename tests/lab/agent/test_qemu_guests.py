"""Real QEMU in front of the helper: two "guests" whose `scsi-block` disks are two hosts'
dm-multipath maps of one LUN, their PR commands sent by QEMU's own pr-manager-helper
client to fence_pr_helper running as nobody:disk with no capability.

Each guest is a qemu-system-x86_64 with the qtest accelerator and a virtio-scsi HBA, driven
by fixtures/qemu_guest.py as a guest's virtio_scsi driver would drive it (no nested kernel:
see that module).  The target's view is read with sg_persist on the lab's path devices.
multipathd manages the maps, as on a host that runs guests: its checker takes the unit
attentions every PR change leaves on the other nexuses and reinstates the paths dm failed
on them.  Before it did (the lab standing in for the checker by hand), a loaded CI round
saw QEMU's start refused: dm answered SG_GET_VERSION_NUM with EIO, the map without an
active path at that instant (2026-12-06, round 2).

CI runs the main scenario on the first kernel; `make qemu-guests` runs it, with one of A's
paths failed, and side by side with Debian's qemu-pr-helper as root (docs/helper.md).
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

from ..fixtures.iscsi import IscsiLab
from ..fixtures.peers import Multipathd, multipathd_hosting, paths_ready
from ..fixtures.prhelper import (
    QEMU_SOCKET,
    SOCKET,
    device_nodes,
    running_helper,
    running_qemu_pr_helper,
)
from ..fixtures.qemu_guest import ScsiResult, VirtioScsi, host_device, qemu_guest
from ..fixtures.topology import group_access, scsi_clear, scsi_full_status, sh, wait_for

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
    answers: dict[str, list[str]] = field(default_factory=dict)  # command: status (sense)

    def row(self) -> str:
        lat = ", ".join(f"{k} {1000 * statistics.median(v):.0f} ms"
                        for k, v in sorted(self.latency.items()))
        bad = {k: v for k, v in self.answers.items() if v != ["GOOD"] * len(v)}
        return (f"answers other than GOOD: {bad or 'none'}; "
                f"A on {self.registered.get(A, 0)} path(s), B on {self.registered.get(B, 0)};"
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
    outcome.answers.setdefault(name, []).append(
        "GOOD" if r.status == GOOD else f"{r.status:#x} {r.sense_key} sense {r.sense[:18].hex()}")
    return r


def block_size(guest: VirtioScsi) -> int:
    r = scsi(guest, bytes([0x25] + [0] * 9), data_in=8)  # READ CAPACITY(10)
    assert r.status == GOOD, r
    return int.from_bytes(r.data[4:8], "big")


def write(guest: VirtioScsi, size: int) -> ScsiResult:
    cdb = bytes([0x2A, 0]) + LBA.to_bytes(4, "big") + bytes([0, 0, 1, 0])  # WRITE(10), 1 block
    return scsi(guest, cdb, data_out=b"g" * size)


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


@pytest.fixture
def managed(clean_iscsi) -> Iterator[tuple[IscsiLab, Multipathd]]:  # type: ignore[no-untyped-def]
    with multipathd_hosting(clean_iscsi) as mpd:
        yield clean_iscsi, mpd


def scenario(lab, mpd: Multipathd, helper: Path,  # type: ignore[no-untyped-def]
             strict: bool = True) -> Outcome:
    """Guest A registers and reserves WE_RO, guest B registers, A PREEMPT AND ABORTs B.
    Not `strict`: a PR command that fails is recorded (Outcome.answers) and the rest go on."""
    probe = lab.luns[0].paths[(2, 0)].dev
    o = Outcome()
    maps = [lab.maps[1][0], lab.maps[2][0]]
    paths_ready(mpd, maps)
    with two_guests(lab, helper) as (ga, gb):
        size = block_size(ga)
        for name, g, (cdb, params) in (
                ("REGISTER", ga, pr_out(wire.OutAction.REGISTER, sa_key=A)),
                ("RESERVE", ga, pr_out(wire.OutAction.RESERVE, key=A, scsi_type=WE_RO)),
                ("REGISTER", gb, pr_out(wire.OutAction.REGISTER, sa_key=B))):
            r = timed(o, name, g, cdb, params)
            assert r.status == GOOD or not strict, (name, r)
        o.registered = nexuses(probe)
        w = write(gb, size)
        assert w.status == GOOD or not strict, f"B, registered under WE_RO, could not write: {w}"
        cdb, params = pr_out(wire.OutAction.PREEMPT_AND_ABORT, key=A, sa_key=B, scsi_type=WE_RO)
        r = timed(o, "PREEMPT AND ABORT", ga, cdb, params)
        assert r.status == GOOD or not strict, r
        o.after = nexuses(probe)
        paths_ready(mpd, maps)
        o.b_write = write(gb, size).status
        # dm sends each SG_IO down the path it picks then: several writes meet both paths.
        o.a_writes = [write(ga, size).status for _ in range(4)]
    return o


def show(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n[qemu guests] {line}", flush=True)


# CI's one scenario (issue 16): on the first kernel (ONCE), the iSCSI pair already up.
def test_qemu_guests_preempt_and_abort_through_fence_pr_helper(managed, capsys) -> None:  # type: ignore[no-untyped-def]
    lab, mpd = managed
    with group_access(device_nodes(lab), "disk"), running_helper() as proc:
        o = scenario(lab, mpd, SOCKET)
        # It serves only after dropping privilege: QEMU's answered commands prove the drop.
        caps = Path(f"/proc/{proc.pid}/status").read_text()
        assert "CapEff:\t0000000000000000" in caps and "Uid:\t65534" in caps, caps
    show(capsys, f"fence_pr_helper: {o.row()}")
    assert o.registered == {A: 2, B: 2}, o.registered  # every path of each guest's map
    assert o.after == {A: 2}, o.after                   # B gone from both of its paths
    assert o.b_write == RESERVATION_CONFLICT, o.row()
    assert o.a_writes == [GOOD] * 4, o.row()


@pytest.mark.extra
def test_qemu_guests_side_by_side_with_qemu_pr_helper(managed, capsys) -> None:  # type: ignore[no-untyped-def]
    """The same scenario through Debian's qemu-pr-helper as root (built without
    libmpathpersist): its SG_IO on a map reaches one path, so a guest's REGISTER covers one
    of the map's two nexuses.  The figures go to docs/helper.md."""
    lab, mpd = managed
    # The kernel log is read, not cleared: the lab prints its tail when a run fails.
    logged = len(sh("dmesg").splitlines())
    with running_qemu_pr_helper() as proc:
        caps = Path(f"/proc/{proc.pid}/status").read_text()
        theirs = scenario(lab, mpd, QEMU_SOCKET, strict=False)
    # LIO logs why it refused a PR command (its RESERVE from an unregistered nexus: 02/08/00).
    target_said = [line for line in sh("dmesg").splitlines()[logged:] if "SPC-3 PR" in line]
    scsi_clear(lab.luns[0].paths[(1, 0)].dev)  # not lab.reset(): multipathd owns the maps
    with group_access(device_nodes(lab), "disk"), running_helper():
        ours = scenario(lab, mpd, SOCKET)
    cap_line = next(line for line in caps.splitlines() if line.startswith("CapEff"))
    show(capsys, f"qemu-pr-helper (uid {os.getuid()}, {cap_line}): {theirs.row()}")
    show(capsys, f"the target's log during it: {target_said or 'nothing'}")
    show(capsys, f"fence_pr_helper (uid 65534, CapEff 0): {ours.row()}")
    assert ours.registered == {A: 2, B: 2} and ours.after == {A: 2}, ours.row()
    assert ours.b_write == RESERVATION_CONFLICT and ours.a_writes == [GOOD] * 4, ours.row()
    # What qemu-pr-helper did is the finding (docs/helper.md); that it ran at all is checked.
    assert theirs.answers.get("REGISTER"), theirs.row()


@pytest.mark.extra
def test_qemu_guests_with_one_of_a_paths_failed(managed, capsys) -> None:  # type: ignore[no-untyped-def]
    """A's second path dead, failed by multipathd's checker: A's registration takes the live
    path, and B is still fenced on both of its paths."""
    lab, mpd = managed
    down = lab.luns[0].paths[(1, 1)]
    with group_access(device_nodes(lab), "disk"), running_helper():
        down.set_state("offline")
        try:
            wait_for(lambda: (down.name, "failed", "faulty") in [
                (d, dm, chk) for d, dm, chk in mpd.paths().get(
                    os.path.basename(lab.maps[1][0]), [])],
                f"multipathd's checker to fail {down.name}, its disk offline", 60)
            o = scenario(lab, mpd, SOCKET)
        finally:
            down.set_state("running")
    show(capsys, f"fence_pr_helper, one of A's paths failed: {o.row()}")
    assert o.registered == {A: 1, B: 2} and o.after == {A: 1}, o.row()
    assert o.b_write == RESERVATION_CONFLICT and o.a_writes == [GOOD] * 4, o.row()
