"""SCSI PERSISTENT RESERVE IN through SG_IO, for kernels without IOC_PR_READ_KEYS (< 6.19).

Only the two reads are here: the "out" commands exist in pr.h since 4.4. SG_IO's command
filter does not list PERSISTENT RESERVE IN as read-safe, so without CAP_SYS_RAWIO this fallback
gets EPERM; that is reported as PermissionDenied saying so.

SCSI results are translated into the pr.h code convention exactly as the kernel's sd driver does
(sd_scsi_to_pr_err), plus the cases SG_IO exposes that sd retries internally, then handed to
errors.raise_for(): the error table stays in one place.
"""

from __future__ import annotations

import ctypes
import errno
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from . import _ioctl
from .errors import (
    PR_STS_IOERR,
    PR_STS_PATH_FAILED,
    PR_STS_PATH_FAST_FAILED,
    PR_STS_RESERVATION_CONFLICT,
    PR_STS_RETRY_PATH_FAILURE,
    exception_for,
    fail,
)
from .prtypes import NO_KEY, Key, KeyList, MalformedResponse, PrType, Reservation, TruncatedResponse

SG_IO = 0x2285
SG_DXFER_FROM_DEV = -3
PERSISTENT_RESERVE_IN = 0x5E
SA_READ_KEYS = 0x00
SA_READ_RESERVATION = 0x01
SENSE_LEN = 32
MAX_ALLOC_LEN = 0xFFFF  # the CDB's ALLOCATION LENGTH is 16 bits: at most 8190 keys
DEFAULT_TIMEOUT_MS = 30_000
_INITIAL_ALLOC_LEN = 8192  # sg_persist's default
_T = TypeVar("_T", KeyList, Reservation)

_HEADER_LEN = 8
_RESERVATION_DESC_LEN = 16

# SAM status bytes
_GOOD = 0x00
_CHECK_CONDITION = 0x02
_BUSY = 0x08
_RESERVATION_CONFLICT = 0x18
_TASK_SET_FULL = 0x28

# sense keys
_NOT_READY = 0x2
_ILLEGAL_REQUEST = 0x5
_UNIT_ATTENTION = 0x6

# host bytes (include/scsi/scsi_status.h)
_DID_NO_CONNECT = 0x01
_DID_BUS_BUSY = 0x02
_DID_TIME_OUT = 0x03
_DID_BAD_TARGET = 0x04
_DID_ABORT = 0x05
_DID_RESET = 0x08
_DID_SOFT_ERROR = 0x0B
_DID_IMM_RETRY = 0x0C
_DID_REQUEUE = 0x0D
_DID_TRANSPORT_DISRUPTED = 0x0E
_DID_TRANSPORT_FAILFAST = 0x0F
_DID_TRANSPORT_MARGINAL = 0x14

_HOST_CODES: dict[int, int] = {
    # as sd_scsi_to_pr_err()
    _DID_TRANSPORT_MARGINAL: PR_STS_RETRY_PATH_FAILURE,
    _DID_TRANSPORT_DISRUPTED: PR_STS_RETRY_PATH_FAILURE,
    _DID_BUS_BUSY: PR_STS_RETRY_PATH_FAILURE,
    _DID_NO_CONNECT: PR_STS_PATH_FAILED,
    _DID_TRANSPORT_FAILFAST: PR_STS_PATH_FAST_FAILED,
    # sd retries these itself; through SG_IO they reach us, and they are transient
    _DID_TIME_OUT: PR_STS_RETRY_PATH_FAILURE,
    _DID_ABORT: PR_STS_RETRY_PATH_FAILURE,
    _DID_RESET: PR_STS_RETRY_PATH_FAILURE,
    _DID_SOFT_ERROR: PR_STS_RETRY_PATH_FAILURE,
    _DID_IMM_RETRY: PR_STS_RETRY_PATH_FAILURE,
    _DID_REQUEUE: PR_STS_RETRY_PATH_FAILURE,
    _DID_BAD_TARGET: -errno.ENODEV,
}

_DRIVER_SENSE = 0x08
_DRIVER_TIMEOUT = 0x06

_PERMISSION_REASON = (
    "permission denied: SG_IO with PERSISTENT RESERVE IN needs CAP_SYS_RAWIO; this fallback is "
    "used because the kernel lacks IOC_PR_READ_KEYS/IOC_PR_READ_RESERVATION (< 6.19), so on "
    "such kernels reading keys needs privilege (partitions are refused regardless)"
)


class SgIoHdr(ctypes.Structure):
    """struct sg_io_hdr from <scsi/sg.h> (88 bytes on x86-64)."""

    _fields_ = [
        ("interface_id", ctypes.c_int),
        ("dxfer_direction", ctypes.c_int),
        ("cmd_len", ctypes.c_ubyte),
        ("mx_sb_len", ctypes.c_ubyte),
        ("iovec_count", ctypes.c_ushort),
        ("dxfer_len", ctypes.c_uint),
        ("dxferp", ctypes.c_void_p),
        ("cmdp", ctypes.c_void_p),
        ("sbp", ctypes.c_void_p),
        ("timeout", ctypes.c_uint),
        ("flags", ctypes.c_uint),
        ("pack_id", ctypes.c_int),
        ("usr_ptr", ctypes.c_void_p),
        ("status", ctypes.c_ubyte),
        ("masked_status", ctypes.c_ubyte),
        ("msg_status", ctypes.c_ubyte),
        ("sb_len_wr", ctypes.c_ubyte),
        ("host_status", ctypes.c_ushort),
        ("driver_status", ctypes.c_ushort),
        ("resid", ctypes.c_int),
        ("duration", ctypes.c_uint),
        ("info", ctypes.c_uint),
    ]


@dataclass(frozen=True)
class Sense:
    key: int
    asc: int
    ascq: int

    def __str__(self) -> str:
        return f"sense key 0x{self.key:x} asc 0x{self.asc:02x} ascq 0x{self.ascq:02x}"


def build_pr_in_cdb(service_action: int, alloc_len: int) -> bytes:
    """10-byte PERSISTENT RESERVE IN CDB."""
    if not 0 <= service_action <= 0x1F:
        raise ValueError(f"service action {service_action} does not fit in 5 bits")
    if not 0 <= alloc_len <= MAX_ALLOC_LEN:
        raise ValueError(f"allocation length {alloc_len} does not fit in 16 bits")
    return struct.pack(">BB5xHx", PERSISTENT_RESERVE_IN, service_action, alloc_len)


def _header(buf: bytes) -> tuple[int, int]:
    if len(buf) < _HEADER_LEN:
        raise TruncatedResponse(
            f"PERSISTENT RESERVE IN response is {len(buf)} bytes, shorter than its 8-byte header",
            needed=_HEADER_LEN,
        )
    generation, additional = struct.unpack_from(">II", buf)
    if len(buf) < _HEADER_LEN + additional:
        raise TruncatedResponse(
            f"PERSISTENT RESERVE IN response announces {additional} bytes of data, "
            f"only {len(buf) - _HEADER_LEN} received",
            needed=_HEADER_LEN + additional,
        )
    return int(generation), int(additional)


def parse_read_keys(buf: bytes) -> KeyList:
    """Parse a READ KEYS response (big-endian generation, length, then 8-byte keys)."""
    generation, additional = _header(buf)
    if additional % 8:
        raise MalformedResponse(f"READ KEYS additional length {additional} is not a multiple of 8")
    keys = [Key(int.from_bytes(buf[o : o + 8], "big"))
            for o in range(_HEADER_LEN, _HEADER_LEN + additional, 8)]
    return KeyList(generation=generation, keys=keys)


def parse_read_reservation(buf: bytes) -> Reservation:
    """Parse a READ RESERVATION response; additional length 0 means no reservation."""
    generation, additional = _header(buf)
    if additional == 0:
        return Reservation(key=NO_KEY, generation=generation, type=None)
    if additional < _RESERVATION_DESC_LEN:
        raise MalformedResponse(
            f"READ RESERVATION additional length {additional} is shorter than a descriptor (16)"
        )
    key = Key(int.from_bytes(buf[8:16], "big"))
    scope_type = buf[21]
    try:
        pr_type = PrType.from_scsi(scope_type & 0x0F)
    except ValueError as exc:
        raise MalformedResponse(str(exc)) from None
    return Reservation(key=key, generation=generation, type=pr_type)


def parse_sense(buf: bytes) -> Sense | None:
    """Sense key/ASC/ASCQ from fixed (0x70/0x71) or descriptor (0x72/0x73) sense data."""
    if len(buf) < 1:
        return None
    code = buf[0] & 0x7F
    if code in (0x70, 0x71) and len(buf) >= 3:
        asc = buf[12] if len(buf) > 12 else 0
        ascq = buf[13] if len(buf) > 13 else 0
        return Sense(buf[2] & 0x0F, asc, ascq)
    if code in (0x72, 0x73) and len(buf) >= 4:
        return Sense(buf[1] & 0x0F, buf[2], buf[3])
    return None


def scsi_result_code(status: int, host_status: int, driver_status: int, sense: Sense | None) -> int:
    """Translate an SG_IO result into the pr.h code convention (0 = success)."""
    if host_status:
        return _HOST_CODES.get(host_status, PR_STS_IOERR)
    driver = driver_status & 0x0F
    if driver == _DRIVER_TIMEOUT:
        return PR_STS_RETRY_PATH_FAILURE
    if driver not in (0, _DRIVER_SENSE):
        return PR_STS_IOERR
    status &= 0xFE
    if status == _GOOD:
        return 0
    if status == _RESERVATION_CONFLICT:
        return PR_STS_RESERVATION_CONFLICT
    if status in (_BUSY, _TASK_SET_FULL):
        return -errno.EAGAIN
    if status == _CHECK_CONDITION and sense is not None:
        if sense.key == _ILLEGAL_REQUEST and sense.asc in (0x24, 0x26):
            return -errno.EINVAL  # as sd: invalid field in CDB / parameter list
        if sense.key == _ILLEGAL_REQUEST and sense.asc == 0x20:
            return -errno.EOPNOTSUPP  # invalid opcode: no PR support at all
        if sense.key in (_UNIT_ATTENTION, _NOT_READY):
            return -errno.EAGAIN  # e.g. "registrations preempted": the next try succeeds
    return PR_STS_IOERR


def _describe(hdr: SgIoHdr, sense: Sense | None) -> str:
    text = (f"SCSI status 0x{hdr.status:02x}, host 0x{hdr.host_status:02x}, "
            f"driver 0x{hdr.driver_status:02x}")
    return f"{text}, {sense}" if sense else text


def _pr_in(fd: int, service_action: int, alloc_len: int, *, op: str, device: str | None,
           timeout_ms: int) -> bytes:
    data = ctypes.create_string_buffer(alloc_len)
    cdb = ctypes.create_string_buffer(build_pr_in_cdb(service_action, alloc_len), 10)
    sense_buf = ctypes.create_string_buffer(SENSE_LEN)
    hdr = SgIoHdr(
        interface_id=ord("S"),
        dxfer_direction=SG_DXFER_FROM_DEV,
        cmd_len=10,
        mx_sb_len=SENSE_LEN,
        dxfer_len=alloc_len,
        dxferp=ctypes.addressof(data),
        cmdp=ctypes.addressof(cdb),
        sbp=ctypes.addressof(sense_buf),
        timeout=timeout_ms,
    )
    buf = bytearray(hdr)
    rc = _ioctl.call(fd, SG_IO, buf)
    if rc < 0:
        reason = _PERMISSION_REASON if rc in (-errno.EPERM, -errno.EACCES) else None
        fail(rc, op=op, device=device, reason=reason, detail="SG_IO")
    out = SgIoHdr.from_buffer(buf)
    sense = parse_sense(sense_buf.raw[: out.sb_len_wr])
    code = scsi_result_code(out.status, out.host_status, out.driver_status, sense)
    if code:
        fail(code, op=op, device=device, detail=_describe(out, sense))
    received = alloc_len - max(int(out.resid), 0)
    return data.raw[: max(received, 0)]


def _read(fd: int, service_action: int, parse: Callable[[bytes], _T], *, op: str,
          device: str | None, timeout_ms: int) -> _T:
    alloc = _INITIAL_ALLOC_LEN
    while True:
        raw = _pr_in(fd, service_action, alloc, op=op, device=device, timeout_ms=timeout_ms)
        try:
            return parse(raw)
        except TruncatedResponse as exc:
            # The device wants more room than we gave it: ask again with the size it announced.
            if exc.needed > alloc and alloc < MAX_ALLOC_LEN and len(raw) >= alloc:
                alloc = min(exc.needed, MAX_ALLOC_LEN)
                continue
            raise exception_for(-errno.EIO, op=op, device=device, detail=str(exc)) from None
        except MalformedResponse as exc:
            raise exception_for(-errno.EIO, op=op, device=device, detail=str(exc)) from None


def read_keys(fd: int, *, device: str | None = None,
              timeout_ms: int = DEFAULT_TIMEOUT_MS) -> KeyList:
    """READ KEYS via SG_IO; same result type as prh.read_keys()."""
    return _read(fd, SA_READ_KEYS, parse_read_keys, op="read keys (SG_IO)", device=device,
                 timeout_ms=timeout_ms)


def read_reservation(fd: int, *, device: str | None = None,
                     timeout_ms: int = DEFAULT_TIMEOUT_MS) -> Reservation:
    """READ RESERVATION via SG_IO; same result type as prh.read_reservation()."""
    return _read(fd, SA_READ_RESERVATION, parse_read_reservation,
                 op="read reservation (SG_IO)", device=device, timeout_ms=timeout_ms)
