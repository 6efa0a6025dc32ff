"""SG_IO fallback: CDB, response parsing, SCSI result translation, and a fake SG_IO kernel."""

from __future__ import annotations

import ctypes
import errno
import struct

import pytest

from fence_pr.pr import _ioctl, sgio
from fence_pr.pr.errors import (
    DeviceBusy,
    DeviceGone,
    IoError,
    NotSupported,
    PathFailure,
    PermissionDenied,
    PrError,
    ReservationConflict,
    exception_for,
)
from fence_pr.pr.prtypes import MalformedResponse, PrType, TruncatedResponse


def keys_response(generation: int, keys: list[int]) -> bytes:
    return struct.pack(">II", generation, 8 * len(keys)) + b"".join(
        k.to_bytes(8, "big") for k in keys)


def reservation_response(generation: int, key: int | None = None, scope_type: int = 0) -> bytes:
    if key is None:
        return struct.pack(">II", generation, 0)
    return struct.pack(">IIQIBBH", generation, 16, key, 0, 0, scope_type, 0)


def test_cdb_bytes() -> None:
    assert sgio.build_pr_in_cdb(1, 0x1234) == bytes(
        [0x5E, 0x01, 0, 0, 0, 0, 0, 0x12, 0x34, 0x00])
    assert sgio.build_pr_in_cdb(0, 0xFFFF) == bytes([0x5E, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0])


@pytest.mark.parametrize(("sa", "alloc"), [(-1, 8), (0x20, 8), (0, -1), (0, 0x10000)])
def test_cdb_rejects_out_of_range(sa: int, alloc: int) -> None:
    with pytest.raises(ValueError):
        sgio.build_pr_in_cdb(sa, alloc)


def test_sg_io_hdr_layout() -> None:
    assert ctypes.sizeof(sgio.SgIoHdr) == 88
    assert sgio.SgIoHdr.dxferp.offset == 16
    assert sgio.SgIoHdr.timeout.offset == 40
    assert sgio.SgIoHdr.status.offset == 64
    assert sgio.SgIoHdr.host_status.offset == 68
    assert sgio.SgIoHdr.resid.offset == 72
    assert sgio.SG_IO == 0x2285


def test_parse_read_keys() -> None:
    res = sgio.parse_read_keys(keys_response(0x01020304, [0x123456789ABCDEF0, 0x1]))
    assert res.generation == 0x01020304
    assert res.keys == [0x123456789ABCDEF0, 0x1]


def test_parse_read_keys_ignores_bytes_past_announced_length() -> None:
    assert sgio.parse_read_keys(keys_response(1, [5]) + b"\xff" * 8).keys == [5]


def test_parse_read_keys_empty() -> None:
    res = sgio.parse_read_keys(keys_response(3, []))
    assert res.keys == [] and res.generation == 3


def test_parse_read_keys_truncated_header() -> None:
    with pytest.raises(TruncatedResponse) as info:
        sgio.parse_read_keys(b"\x00" * 7)
    assert info.value.needed == 8


def test_parse_read_keys_truncated_data() -> None:
    with pytest.raises(TruncatedResponse) as info:
        sgio.parse_read_keys(keys_response(1, [1, 2, 3])[:20])
    assert info.value.needed == 32


def test_parse_read_keys_bad_length() -> None:
    with pytest.raises(MalformedResponse, match="multiple of 8"):
        sgio.parse_read_keys(struct.pack(">II", 1, 12) + b"\x00" * 12)


def test_parse_read_reservation_none() -> None:
    res = sgio.parse_read_reservation(reservation_response(9))
    assert res.type is None and res.key == 0 and res.generation == 9


@pytest.mark.parametrize(("scope_type", "expected"), [
    (0x05, PrType.WRITE_EXCLUSIVE_REG_ONLY),
    (0x01, PrType.WRITE_EXCLUSIVE),
    (0x08, PrType.EXCLUSIVE_ACCESS_ALL_REGS),
    (0x03, PrType.EXCLUSIVE_ACCESS),
])
def test_parse_read_reservation_types(scope_type: int, expected: PrType) -> None:
    res = sgio.parse_read_reservation(reservation_response(2, 0xAB0001, scope_type))
    assert res.type is expected
    assert res.key == 0xAB0001


def test_parse_read_reservation_type_is_low_nibble() -> None:
    # a non-zero scope nibble must not change the type
    assert sgio.parse_read_reservation(
        reservation_response(2, 1, 0x25)).type is PrType.WRITE_EXCLUSIVE_REG_ONLY


def test_parse_read_reservation_unknown_type() -> None:
    with pytest.raises(MalformedResponse):
        sgio.parse_read_reservation(reservation_response(2, 1, 0x02))


def test_parse_read_reservation_short_descriptor() -> None:
    with pytest.raises(MalformedResponse):
        sgio.parse_read_reservation(struct.pack(">II", 1, 8) + b"\x00" * 8)


def test_parse_read_reservation_truncated() -> None:
    with pytest.raises(TruncatedResponse) as info:
        sgio.parse_read_reservation(reservation_response(2, 1, 5)[:16])
    assert info.value.needed == 24


def test_parse_sense_formats() -> None:
    fixed = bytes([0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0x01])
    assert sgio.parse_sense(fixed) == sgio.Sense(0x5, 0x24, 0x01)
    desc = bytes([0x72, 0x06, 0x2A, 0x05, 0, 0, 0, 0])
    assert sgio.parse_sense(desc) == sgio.Sense(0x6, 0x2A, 0x05)
    assert sgio.parse_sense(b"") is None
    assert sgio.parse_sense(b"\x00" * 18) is None


UA = sgio.Sense(0x6, 0x2A, 0x05)


@pytest.mark.parametrize(("status", "host", "driver", "sense", "cls"), [
    (0x18, 0, 0, None, ReservationConflict),
    (0x00, 0x01, 0, None, PathFailure),      # DID_NO_CONNECT
    (0x00, 0x0E, 0, None, PathFailure),      # DID_TRANSPORT_DISRUPTED
    (0x00, 0x0F, 0, None, PathFailure),      # DID_TRANSPORT_FAILFAST
    (0x00, 0x03, 0, None, PathFailure),      # DID_TIME_OUT
    (0x00, 0x04, 0, None, DeviceGone),       # DID_BAD_TARGET
    (0x00, 0x07, 0, None, IoError),          # DID_ERROR
    (0x00, 0, 0x06, None, PathFailure),      # DRIVER_TIMEOUT
    (0x02, 0, 0x08, sgio.Sense(0x5, 0x24, 0), NotSupported),
    (0x02, 0, 0x08, sgio.Sense(0x5, 0x20, 0), NotSupported),
    (0x02, 0, 0x08, UA, DeviceBusy),
    (0x02, 0, 0x08, sgio.Sense(0x3, 0x11, 0), IoError),
    (0x02, 0, 0, None, IoError),
    (0x08, 0, 0, None, DeviceBusy),
])
def test_scsi_results(status: int, host: int, driver: int, sense: sgio.Sense | None,
                      cls: type[PrError]) -> None:
    code = sgio.scsi_result_code(status, host, driver, sense)
    assert code != 0
    assert type(exception_for(code, op="read keys", device="/dev/sdx")) is cls


def test_scsi_good_with_sense_flag_is_success() -> None:
    assert sgio.scsi_result_code(0, 0, 0x08, None) == 0
    assert sgio.scsi_result_code(0, 0, 0, None) == 0


class FakeSgIo:
    """Kernel stand-in for SG_IO: decodes the header, writes a response through the pointers."""

    def __init__(self, response: bytes, *, status: int = 0, host: int = 0, rc: int = 0,
                 sense: bytes = b"") -> None:
        self.response = response
        self.status, self.host, self.rc, self.sense = status, host, rc, sense
        self.cdbs: list[bytes] = []
        self.timeouts: list[int] = []

    def __call__(self, fd: int, request: int, buf: bytearray | None = None) -> int:
        assert request == sgio.SG_IO and buf is not None
        if self.rc:
            return self.rc
        hdr = sgio.SgIoHdr.from_buffer(buf)
        assert hdr.interface_id == ord("S")
        assert hdr.dxfer_direction == -3
        assert hdr.mx_sb_len == 32 and hdr.cmd_len == 10 and hdr.timeout > 0
        self.cdbs.append(ctypes.string_at(hdr.cmdp, hdr.cmd_len))
        self.timeouts.append(hdr.timeout)
        n = min(len(self.response), hdr.dxfer_len)
        ctypes.memmove(hdr.dxferp, self.response, n)
        hdr.resid = hdr.dxfer_len - n
        hdr.status = self.status
        hdr.host_status = self.host
        if self.sense:
            ctypes.memmove(hdr.sbp, self.sense, len(self.sense))
            hdr.sb_len_wr = len(self.sense)
            hdr.driver_status = 0x08
        return 0


def test_read_keys_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeSgIo(keys_response(4, [0xA, 0xB]))
    monkeypatch.setattr(_ioctl, "call", fake)
    assert sgio.read_keys(3).keys == [0xA, 0xB]
    assert fake.cdbs == [sgio.build_pr_in_cdb(0, 8192)]


def test_read_keys_grows_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = list(range(1, 1101))  # 8 + 8800 bytes > 8192
    fake = FakeSgIo(keys_response(4, keys))
    monkeypatch.setattr(_ioctl, "call", fake)
    assert sgio.read_keys(3).keys == keys
    assert fake.cdbs[1] == sgio.build_pr_in_cdb(0, 8 + 8800)


def test_the_fallback_takes_its_timeout_from_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """prread hands SG_IO what is left of the run's budget (it once always sent 30 s)."""
    from fence_pr.host.budget import Deadline
    from fence_pr.pr import prread

    fake = FakeSgIo(keys_response(4, [0xA]))
    monkeypatch.setattr(_ioctl, "call", fake)
    monkeypatch.setattr(prread, "FORCE_FALLBACK", True)
    deadline = Deadline(2.5)
    assert prread.read_keys(3, nvme=False, device="/dev/sdz",
                            timeout_ms=deadline.timeout_ms()).keys == [0xA]
    assert len(fake.timeouts) == 1 and 2000 < fake.timeouts[0] <= 2500, fake.timeouts
    assert Deadline(0).timeout_ms() == 100  # never 0: SG_IO would take that as 60 s


def test_read_reservation_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeSgIo(reservation_response(4, 0x77, 0x05))
    monkeypatch.setattr(_ioctl, "call", fake)
    res = sgio.read_reservation(3)
    assert (res.key, res.type) == (0x77, PrType.WRITE_EXCLUSIVE_REG_ONLY)
    assert fake.cdbs[0][1] == 0x01


def test_conflict_status(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_ioctl, "call", FakeSgIo(b"", status=0x18))
    with pytest.raises(ReservationConflict, match="/dev/sdz"):
        sgio.read_keys(3, device="/dev/sdz")


def test_check_condition_sense_in_message(monkeypatch: pytest.MonkeyPatch) -> None:
    sense = bytes([0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0x00])
    monkeypatch.setattr(_ioctl, "call", FakeSgIo(b"", status=0x02, sense=sense))
    with pytest.raises(NotSupported, match="asc 0x20"):
        sgio.read_keys(3, device="/dev/sdz")


@pytest.mark.parametrize("err", [errno.EPERM, errno.EACCES])
def test_permission_message(monkeypatch: pytest.MonkeyPatch, err: int) -> None:
    monkeypatch.setattr(_ioctl, "call", FakeSgIo(b"", rc=-err))
    with pytest.raises(PermissionDenied, match="CAP_SYS_RAWIO"):
        sgio.read_keys(3, device="/dev/sdz")


def test_truncated_by_device_is_ioerror(monkeypatch: pytest.MonkeyPatch) -> None:
    # announces 3 keys but sends one: reallocating cannot help
    monkeypatch.setattr(_ioctl, "call", FakeSgIo(keys_response(1, [1, 2, 3])[:16]))
    with pytest.raises(IoError, match="announces 24 bytes"):
        sgio.read_keys(3, device="/dev/sdz")
