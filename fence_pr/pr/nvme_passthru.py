"""NVMe Reservation Report through NVME_IOCTL_IO_CMD, for kernels without IOC_PR_READ_KEYS.

Mirrors the kernel's own nvme_pr_read_keys()/nvme_pr_read_reservation(): ask with the extended
data structure (128-bit host IDs) first and retry without it when the controller answers Host
Identifier Inconsistent Format. NVMe statuses are translated into the pr.h code convention as
the kernel's nvme_sc_to_pr_err() does, then handed to errors.raise_for().
"""

from __future__ import annotations

import ctypes
import errno
import struct
from dataclasses import dataclass

from . import _ioctl
from .errors import (
    PR_STS_IOERR,
    PR_STS_PATH_FAILED,
    PR_STS_RESERVATION_CONFLICT,
    exception_for,
    fail,
)
from .prtypes import NO_KEY, Key, KeyList, MalformedResponse, PrType, Reservation, TruncatedResponse

NVME_CMD_RESV_REPORT = 0x0E
CDW11_EDS = 0x1
DEFAULT_TIMEOUT_MS = 30_000

EXT_HEADER_LEN = 64
EXT_ENTRY_LEN = 64
STD_HEADER_LEN = 24
STD_ENTRY_LEN = 24

# NVMe status field as returned by the passthrough ioctl: SC in bits 0-7, SCT in 8-10.
_SCT_SC_MASK = 0x7FF
_SCT_MASK = 0x700
_SCT_PATH = 0x300
SC_INVALID_OPCODE = 0x01
SC_INVALID_FIELD = 0x02
SC_INVALID_NS = 0x0B
SC_HOST_ID_INCONSIST = 0x18
SC_RESERVATION_CONFLICT = 0x83
SC_BAD_ATTRIBUTES = 0x180

_ATTEMPTS = 5

_PERMISSION_REASON = (
    "permission denied: NVMe passthrough needs CAP_SYS_ADMIN unless the controller's Commands "
    "Supported and Effects log marks Reservation Report as supported (then read access is "
    "enough); partitions always need CAP_SYS_ADMIN"
)


class NvmePassthruCmd(ctypes.Structure):
    """struct nvme_passthru_cmd from <linux/nvme_ioctl.h> (72 bytes)."""

    _fields_ = [
        ("opcode", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("rsvd1", ctypes.c_uint16),
        ("nsid", ctypes.c_uint32),
        ("cdw2", ctypes.c_uint32),
        ("cdw3", ctypes.c_uint32),
        ("metadata", ctypes.c_uint64),
        ("addr", ctypes.c_uint64),
        ("metadata_len", ctypes.c_uint32),
        ("data_len", ctypes.c_uint32),
        ("cdw10", ctypes.c_uint32),
        ("cdw11", ctypes.c_uint32),
        ("cdw12", ctypes.c_uint32),
        ("cdw13", ctypes.c_uint32),
        ("cdw14", ctypes.c_uint32),
        ("cdw15", ctypes.c_uint32),
        ("timeout_ms", ctypes.c_uint32),
        ("result", ctypes.c_uint32),
    ]


NVME_IOCTL_ID = _ioctl.io("N", 0x40)
NVME_IOCTL_IO_CMD = _ioctl.iowr("N", 0x43, ctypes.sizeof(NvmePassthruCmd))


@dataclass(frozen=True)
class Registrant:
    cntlid: int
    holds_reservation: bool
    key: Key
    host_id: bytes


@dataclass(frozen=True)
class ReservationStatus:
    """A parsed Reservation Report."""

    generation: int
    rtype: int
    ptpls: bool
    registrants: list[Registrant]

    def key_list(self) -> KeyList:
        return KeyList(generation=self.generation, keys=[r.key for r in self.registrants])

    def reservation(self) -> Reservation:
        """Holder as pr.h reports it; all-registrants types report key 0 like SCSI does."""
        if self.rtype == 0:
            return Reservation(key=NO_KEY, generation=self.generation, type=None)
        pr_type = PrType.from_nvme(self.rtype)
        key = NO_KEY
        if not pr_type.all_registrants:
            key = next((r.key for r in self.registrants if r.holds_reservation), NO_KEY)
        return Reservation(key=key, generation=self.generation, type=pr_type)


def report_length(num_registrants: int, *, eds: bool) -> int:
    """Buffer size for a report with that many registrants (always a multiple of 4)."""
    if eds:
        return EXT_HEADER_LEN + num_registrants * EXT_ENTRY_LEN
    return STD_HEADER_LEN + num_registrants * STD_ENTRY_LEN


def build_resv_report_cmd(
    nsid: int, addr: int, data_len: int, *, eds: bool, timeout_ms: int = DEFAULT_TIMEOUT_MS
) -> NvmePassthruCmd:
    """Reservation Report command; cdw10 is the 0's-based dword count."""
    if data_len < 4 or data_len % 4:
        raise ValueError(f"Reservation Report length {data_len} must be a positive multiple of 4")
    return NvmePassthruCmd(
        opcode=NVME_CMD_RESV_REPORT,
        nsid=nsid,
        addr=addr,
        data_len=data_len,
        cdw10=data_len // 4 - 1,
        cdw11=CDW11_EDS if eds else 0,
        timeout_ms=timeout_ms,
    )


def parse_registrant_count(buf: bytes) -> int:
    """REGCTL from a (possibly header-only) report."""
    if len(buf) < 7:
        raise TruncatedResponse(f"Reservation Report is {len(buf)} bytes, too short for REGCTL",
                                needed=STD_HEADER_LEN)
    return int(struct.unpack_from("<H", buf, 5)[0])


def parse_resv_report(buf: bytes, *, eds: bool) -> ReservationStatus:
    """Parse a Reservation Report (little-endian) in extended or standard layout."""
    header, entry = (EXT_HEADER_LEN, EXT_ENTRY_LEN) if eds else (STD_HEADER_LEN, STD_ENTRY_LEN)
    if len(buf) < header:
        raise TruncatedResponse(
            f"Reservation Report is {len(buf)} bytes, shorter than its {header}-byte header",
            needed=header,
        )
    generation, rtype, regctl = struct.unpack_from("<IBH", buf, 0)
    ptpls = bool(buf[9] & 0x1)
    needed = header + regctl * entry
    if len(buf) < needed:
        raise TruncatedResponse(
            f"Reservation Report lists {regctl} registrants but only "
            f"{(len(buf) - header) // entry} fit in {len(buf)} bytes",
            needed=needed,
        )
    registrants = []
    for i in range(regctl):
        off = header + i * entry
        cntlid, rcsts = struct.unpack_from("<HB", buf, off)
        if eds:
            (rkey,) = struct.unpack_from("<Q", buf, off + 8)
            host_id = bytes(buf[off + 16 : off + 32])
        else:
            host_id = bytes(buf[off + 8 : off + 16])
            (rkey,) = struct.unpack_from("<Q", buf, off + 16)
        registrants.append(Registrant(int(cntlid), bool(rcsts & 0x1), Key(rkey), host_id))
    if rtype and not 1 <= rtype <= 6:
        raise MalformedResponse(f"Reservation Report has unknown reservation type {rtype}")
    return ReservationStatus(int(generation), int(rtype), ptpls, registrants)


def nvme_status_code(status: int) -> int:
    """Translate an NVMe status (ioctl's positive return) into the pr.h code convention."""
    if (status & _SCT_MASK) == _SCT_PATH:
        return PR_STS_PATH_FAILED
    sc = status & _SCT_SC_MASK
    if sc == 0:
        return 0
    if sc == SC_RESERVATION_CONFLICT:
        return PR_STS_RESERVATION_CONFLICT
    if sc in (SC_INVALID_OPCODE, SC_INVALID_FIELD, SC_INVALID_NS, SC_BAD_ATTRIBUTES):
        return -errno.EINVAL
    return PR_STS_IOERR


def _check_errno(rc: int, *, op: str, device: str | None, what: str) -> None:
    if rc < 0:
        reason = _PERMISSION_REASON if rc in (-errno.EPERM, -errno.EACCES) else None
        fail(rc, op=op, device=device, reason=reason, detail=what)


def namespace_id(fd: int, *, device: str | None = None) -> int:
    """NSID of the namespace behind fd (NVME_IOCTL_ID returns it as the ioctl result)."""
    rc = _ioctl.call(fd, NVME_IOCTL_ID)
    _check_errno(rc, op="namespace id", device=device, what="NVME_IOCTL_ID")
    return rc


def _report(fd: int, nsid: int, length: int, *, eds: bool, op: str, device: str | None,
            timeout_ms: int) -> tuple[int, bytes]:
    data = ctypes.create_string_buffer(length)
    cmd = build_resv_report_cmd(nsid, ctypes.addressof(data), length, eds=eds,
                                timeout_ms=timeout_ms)
    buf = bytearray(cmd)
    rc = _ioctl.call(fd, NVME_IOCTL_IO_CMD, buf)
    _check_errno(rc, op=op, device=device, what="NVME_IOCTL_IO_CMD")
    return rc, data.raw


def _raise_status(status: int, *, op: str, device: str | None) -> None:
    code = nvme_status_code(status)
    if code:
        fail(code, op=op, device=device, detail=f"NVMe status 0x{status:x}")


def reservation_report(fd: int, *, device: str | None = None,
                       timeout_ms: int = DEFAULT_TIMEOUT_MS) -> ReservationStatus:
    """Fetch and parse the full Reservation Report (header first, then sized to REGCTL)."""
    op = "reservation report (NVMe passthrough)"
    nsid = namespace_id(fd, device=device)
    eds = True
    for _ in range(_ATTEMPTS):
        length = report_length(0, eds=eds)
        status, raw = _report(fd, nsid, length, eds=eds, op=op, device=device,
                              timeout_ms=timeout_ms)
        if eds and status & _SCT_SC_MASK in (SC_HOST_ID_INCONSIST, SC_INVALID_FIELD):
            eds = False  # controller without 128-bit host IDs / without EDS: standard layout
            continue
        _raise_status(status, op=op, device=device)
        length = report_length(parse_registrant_count(raw), eds=eds)
        status, raw = _report(fd, nsid, length, eds=eds, op=op, device=device,
                              timeout_ms=timeout_ms)
        _raise_status(status, op=op, device=device)
        try:
            return parse_resv_report(raw, eds=eds)
        except TruncatedResponse:
            continue  # a host registered between the two reports: size again
        except MalformedResponse as exc:
            raise exception_for(-errno.EIO, op=op, device=device, detail=str(exc)) from None
    raise exception_for(-errno.EAGAIN, op=op, device=device,
                        detail=f"registrant count kept changing over {_ATTEMPTS} attempts")


def read_keys(fd: int, *, device: str | None = None,
              timeout_ms: int = DEFAULT_TIMEOUT_MS) -> KeyList:
    """Registered keys via passthrough; same result type as prh.read_keys()."""
    return reservation_report(fd, device=device, timeout_ms=timeout_ms).key_list()


def read_reservation(fd: int, *, device: str | None = None,
                     timeout_ms: int = DEFAULT_TIMEOUT_MS) -> Reservation:
    """Current reservation via passthrough; same result type as prh.read_reservation()."""
    return reservation_report(fd, device=device, timeout_ms=timeout_ms).reservation()
