"""NVMe passthrough fallback: command layout, report parsing, status mapping, fake controller."""

from __future__ import annotations

import ctypes
import errno
import struct

import pytest

from fence_pr.pr import _ioctl
from fence_pr.pr import nvme_passthru as nv
from fence_pr.pr.errors import (
    IoError,
    NotSupported,
    PathFailure,
    PermissionDenied,
    PrError,
    ReservationConflict,
    exception_for,
)
from fence_pr.pr.prtypes import MalformedResponse, PrType, TruncatedResponse

HOST_A = bytes(range(16))
HOST_B = bytes(range(16, 32))


def ext_report(gen: int, rtype: int, regs: list[tuple[int, int, int, bytes]],
               ptpls: int = 0) -> bytes:
    """regs: (cntlid, rcsts, rkey, hostid16)"""
    head = struct.pack("<IBH2xB", gen, rtype, len(regs), ptpls).ljust(64, b"\0")
    body = b"".join(
        (struct.pack("<HB5xQ", c, s, k) + h).ljust(64, b"\0") for c, s, k, h in regs)
    return head + body


def std_report(gen: int, rtype: int, regs: list[tuple[int, int, int, bytes]]) -> bytes:
    """regs: (cntlid, rcsts, rkey, hostid8)"""
    head = struct.pack("<IBH2xB", gen, rtype, len(regs), 0).ljust(24, b"\0")
    body = b"".join(struct.pack("<HB5x", c, s) + h + struct.pack("<Q", k)
                    for c, s, k, h in regs)
    return head + body


def test_struct_and_ioctls() -> None:
    assert ctypes.sizeof(nv.NvmePassthruCmd) == 72
    assert nv.NvmePassthruCmd.nsid.offset == 4
    assert nv.NvmePassthruCmd.addr.offset == 24
    assert nv.NvmePassthruCmd.data_len.offset == 36
    assert nv.NvmePassthruCmd.cdw10.offset == 40
    assert nv.NvmePassthruCmd.timeout_ms.offset == 64
    assert nv.NvmePassthruCmd.result.offset == 68
    assert nv.NVME_IOCTL_IO_CMD == 0xC0484E43
    assert nv.NVME_IOCTL_ID == 0x4E40


def test_build_command() -> None:
    cmd = nv.build_resv_report_cmd(7, 0x1000, 128, eds=True, timeout_ms=5)
    assert (cmd.opcode, cmd.nsid, cmd.addr, cmd.data_len) == (0x0E, 7, 0x1000, 128)
    assert cmd.cdw10 == 31
    assert cmd.cdw11 == 1
    assert cmd.timeout_ms == 5
    assert nv.build_resv_report_cmd(7, 0, 24, eds=False).cdw11 == 0


@pytest.mark.parametrize("length", [0, 2, 66])
def test_build_command_rejects_bad_length(length: int) -> None:
    with pytest.raises(ValueError):
        nv.build_resv_report_cmd(1, 0, length, eds=True)


def test_report_length() -> None:
    assert nv.report_length(0, eds=True) == 64
    assert nv.report_length(3, eds=True) == 64 + 192
    assert nv.report_length(3, eds=False) == 24 + 72


def test_parse_extended() -> None:
    buf = ext_report(9, 3, [(1, 0, 0xAAAA, HOST_A), (2, 1, 0xBBBB, HOST_B)], ptpls=1)
    st = nv.parse_resv_report(buf, eds=True)
    assert (st.generation, st.rtype, st.ptpls) == (9, 3, True)
    assert [(r.cntlid, r.holds_reservation, r.key, r.host_id) for r in st.registrants] == [
        (1, False, 0xAAAA, HOST_A), (2, True, 0xBBBB, HOST_B)]
    assert st.key_list().keys == [0xAAAA, 0xBBBB]
    res = st.reservation()
    assert (res.key, res.type, res.generation) == (0xBBBB, PrType.WRITE_EXCLUSIVE_REG_ONLY, 9)


def test_parse_standard() -> None:
    buf = std_report(2, 1, [(5, 1, 0x1234, HOST_A[:8]), (6, 0, 0x5678, HOST_B[:8])])
    st = nv.parse_resv_report(buf, eds=False)
    assert [(r.cntlid, r.key, r.host_id) for r in st.registrants] == [
        (5, 0x1234, HOST_A[:8]), (6, 0x5678, HOST_B[:8])]
    assert st.reservation().key == 0x1234


def test_all_registrants_reports_key_zero() -> None:
    buf = ext_report(1, 5, [(1, 1, 0xAAAA, HOST_A), (2, 1, 0xBBBB, HOST_B)])
    res = nv.parse_resv_report(buf, eds=True).reservation()
    assert res.type is PrType.WRITE_EXCLUSIVE_ALL_REGS and res.key == 0


def test_no_reservation() -> None:
    res = nv.parse_resv_report(ext_report(4, 0, [(1, 0, 7, HOST_A)]), eds=True).reservation()
    assert res.type is None and res.key == 0 and res.generation == 4


def test_truncated_report() -> None:
    buf = ext_report(1, 0, [(1, 0, 1, HOST_A), (2, 0, 2, HOST_B)])
    with pytest.raises(TruncatedResponse) as info:
        nv.parse_resv_report(buf[:64 + 64], eds=True)
    assert info.value.needed == 64 + 128
    with pytest.raises(TruncatedResponse):
        nv.parse_resv_report(buf[:30], eds=True)


def test_unknown_type() -> None:
    with pytest.raises(MalformedResponse):
        nv.parse_resv_report(ext_report(1, 7, []), eds=True)


def test_registrant_count_from_header_only() -> None:
    assert nv.parse_registrant_count(ext_report(1, 0, [(1, 0, 1, HOST_A)] * 3)[:64]) == 3


@pytest.mark.parametrize(("status", "cls"), [
    (0x83, ReservationConflict),
    (0x4083, ReservationConflict),  # DNR bit set
    (0x302, PathFailure),           # path-related status type
    (0x02, NotSupported),
    (0x01, NotSupported),
    (0x06, IoError),
])
def test_status_mapping(status: int, cls: type[PrError]) -> None:
    code = nv.nvme_status_code(status)
    assert type(exception_for(code, op="x", device="/dev/nvme0n1")) is cls


def test_status_success() -> None:
    assert nv.nvme_status_code(0) == 0


class FakeController:
    """Answers NVME_IOCTL_ID and Reservation Report like a controller with 64-bit host IDs."""

    def __init__(self, report_std: bytes, *, eds_supported: bool, status: int = 0,
                 rc: int = 0) -> None:
        self.report_std = report_std
        self.eds_supported = eds_supported
        self.status, self.rc = status, rc
        self.cmds: list[tuple[int, int, int]] = []  # (nsid, cdw10, cdw11)

    def __call__(self, fd: int, request: int, buf: bytearray | None = None) -> int:
        if request == nv.NVME_IOCTL_ID:
            return 5
        assert request == nv.NVME_IOCTL_IO_CMD and buf is not None
        if self.rc:
            return self.rc
        cmd = nv.NvmePassthruCmd.from_buffer(buf)
        assert cmd.opcode == 0x0E and cmd.data_len == (cmd.cdw10 + 1) * 4
        self.cmds.append((cmd.nsid, cmd.cdw10, cmd.cdw11))
        if self.status:
            return self.status
        if cmd.cdw11 & 1 and not self.eds_supported:
            return 0x18  # Host Identifier Inconsistent Format
        data = self.report_std
        n = min(len(data), cmd.data_len)
        ctypes.memmove(cmd.addr, data, n)
        return 0


def test_falls_back_to_standard_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    report = std_report(3, 3, [(1, 0, 0x11, HOST_A[:8]), (2, 1, 0x22, HOST_B[:8])])
    fake = FakeController(report, eds_supported=False)
    monkeypatch.setattr(_ioctl, "call", fake)
    res = nv.read_reservation(3, device="/dev/nvme0n1")
    assert (res.key, res.type) == (0x22, PrType.WRITE_EXCLUSIVE_REG_ONLY)
    assert fake.cmds[0] == (5, 15, 1)       # first try: EDS, 64-byte header
    assert fake.cmds[1] == (5, 5, 0)        # then standard, 24-byte header
    assert fake.cmds[2] == (5, (24 + 48) // 4 - 1, 0)
    assert nv.read_keys(3).keys == [0x11, 0x22]


def test_conflict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_ioctl, "call", FakeController(b"", eds_supported=True, status=0x83))
    with pytest.raises(ReservationConflict, match="/dev/nvme1n1"):
        nv.read_keys(3, device="/dev/nvme1n1")


@pytest.mark.parametrize("err", [errno.EACCES, errno.EPERM])
def test_permission(monkeypatch: pytest.MonkeyPatch, err: int) -> None:
    monkeypatch.setattr(_ioctl, "call", FakeController(b"", eds_supported=True, rc=-err))
    with pytest.raises(PermissionDenied, match="CAP_SYS_ADMIN"):
        nv.read_keys(3, device="/dev/nvme1n1")
