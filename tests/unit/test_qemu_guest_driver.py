"""The lab's QEMU "guest" driver (tests/lab/fixtures/qemu_guest.py) against QEMU's own
emulated disk on the host: the lab's PR tests read their outcomes through it, so it must
carry a CDB there and the status, sense and data back, both ways."""

from __future__ import annotations

from pathlib import Path

from tests.lab.fixtures.qemu_guest import qemu_guest


def test_inquiry_unit_attention_write_and_read_back(tmp_path: Path) -> None:
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(1 << 20))
    with qemu_guest(f"driver=file,filename={img},node-name=disk0", "scsi-hd") as d:
        first = d.command(bytes(6))  # TEST UNIT READY: QEMU's power-on reset first
        assert (first.status, first.sense_key) == (2, (6, 0x29, 0)), first
        assert d.command(bytes(6)).status == 0
        inq = d.command(bytes([0x12, 0, 0, 0, 96, 0]), data_in=96)
        assert (inq.status, inq.data[8:16], inq.data[16:32]) == \
            (0, b"QEMU    ", b"QEMU HARDDISK   "), inq
        block = bytes(range(256)) * 2
        cdb = bytes([0, 0, 0, 0, 7, 0, 0, 1, 0])  # LBA 7, one block
        assert d.command(bytes([0x2A]) + cdb, data_out=block).status == 0
        back = d.command(bytes([0x28]) + cdb, data_in=512)
        assert (back.status, back.data) == (0, block)
        bad = d.command(bytes([0xFF]) + bytes(9))  # no such opcode
        assert (bad.status, bad.sense_key) == (2, (5, 0x20, 0)), bad
    assert img.read_bytes()[7 * 512:8 * 512] == block
