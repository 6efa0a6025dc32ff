"""Binding of <linux/pr.h>: structs, ioctl numbers and one function per ioctl.

Knows nothing of Pacemaker or of device types. Every function takes an fd the caller opened
(write access for the "out" commands unless CAP_SYS_ADMIN; read access suffices for the two
reads on 7.0+/6.19.y) and a device name used only in error messages.

read_keys()/read_reservation() need Linux 6.19+. On older kernels they raise
errors.NotSupported (ENOTTY/EINVAL/EOPNOTSUPP); callers catch that and fall back to
fence_pr.sgio (SCSI) or fence_pr.nvme_passthru (NVMe). There is no separate probe: the first
real read is the probe, and the caller can remember the answer per device.
"""

from __future__ import annotations

import ctypes
import errno

from . import _ioctl
from .errors import exception_for, raise_for
from .prtypes import Key, KeyList, PrType, Reservation

__all__ = [
    "IOC_PR_CLEAR",
    "IOC_PR_PREEMPT",
    "IOC_PR_PREEMPT_ABORT",
    "IOC_PR_READ_KEYS",
    "IOC_PR_READ_RESERVATION",
    "IOC_PR_REGISTER",
    "IOC_PR_RELEASE",
    "IOC_PR_RESERVE",
    "MAX_KEYS",
    "PR_FL_IGNORE_KEY",
    "KeyList",
    "PrType",
    "Reservation",
    "clear",
    "preempt",
    "read_keys",
    "read_reservation",
    "register",
    "release",
    "reserve",
]

PR_FL_IGNORE_KEY = 1
MAX_KEYS = 65536
"""Largest num_keys the kernel accepts for IOC_PR_READ_KEYS (PR_KEYS_MAX_NUM)."""

_READ_KEYS_ATTEMPTS = 5


# Class names follow the C structs on purpose.
class pr_registration(ctypes.Structure):
    _fields_ = [
        ("old_key", ctypes.c_uint64),
        ("new_key", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


class pr_reservation(ctypes.Structure):
    _fields_ = [
        ("key", ctypes.c_uint64),
        ("type", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
    ]


class pr_preempt(ctypes.Structure):
    _fields_ = [
        ("old_key", ctypes.c_uint64),
        ("new_key", ctypes.c_uint64),
        ("type", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
    ]


class pr_clear(ctypes.Structure):
    _fields_ = [
        ("key", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


class pr_read_keys(ctypes.Structure):
    _fields_ = [
        ("generation", ctypes.c_uint32),
        ("num_keys", ctypes.c_uint32),
        ("keys_ptr", ctypes.c_uint64),
    ]


class pr_read_reservation(ctypes.Structure):
    _fields_ = [
        ("key", ctypes.c_uint64),
        ("generation", ctypes.c_uint32),
        ("type", ctypes.c_uint32),
    ]


IOC_PR_REGISTER = _ioctl.iow("p", 200, ctypes.sizeof(pr_registration))
IOC_PR_RESERVE = _ioctl.iow("p", 201, ctypes.sizeof(pr_reservation))
IOC_PR_RELEASE = _ioctl.iow("p", 202, ctypes.sizeof(pr_reservation))
IOC_PR_PREEMPT = _ioctl.iow("p", 203, ctypes.sizeof(pr_preempt))
IOC_PR_PREEMPT_ABORT = _ioctl.iow("p", 204, ctypes.sizeof(pr_preempt))
IOC_PR_CLEAR = _ioctl.iow("p", 205, ctypes.sizeof(pr_clear))
IOC_PR_READ_KEYS = _ioctl.iowr("p", 206, ctypes.sizeof(pr_read_keys))
IOC_PR_READ_RESERVATION = _ioctl.ior("p", 207, ctypes.sizeof(pr_read_reservation))

# Guard against a layout mistake silently sending the wrong ioctl (values from the kernel UAPI).
_EXPECTED = {
    IOC_PR_REGISTER: 0x401870C8,
    IOC_PR_RESERVE: 0x401070C9,
    IOC_PR_RELEASE: 0x401070CA,
    IOC_PR_PREEMPT: 0x401870CB,
    IOC_PR_PREEMPT_ABORT: 0x401870CC,
    IOC_PR_CLEAR: 0x401070CD,
    IOC_PR_READ_KEYS: 0xC01070CE,
    IOC_PR_READ_RESERVATION: 0x801070CF,
}
if any(k != v for k, v in _EXPECTED.items()):  # pragma: no cover - only on a broken platform
    raise ImportError(f"pr.h ioctl numbers do not match the kernel ABI: {_EXPECTED}")


def _submit(
    fd: int, request: int, arg: ctypes.Structure, *, op: str, device: str | None
) -> bytearray:
    buf = bytearray(arg)
    raise_for(_ioctl.call(fd, request, buf), op=op, device=device)
    return buf


def register(
    fd: int, old_key: int, new_key: int, *, ignore_key: bool = False, device: str | None = None
) -> None:
    """Register new_key (new_key=0 unregisters). ignore_key replaces whatever key is held.

    On SCSI this covers only the path behind fd; on NVMe it covers the host.
    """
    flags = PR_FL_IGNORE_KEY if ignore_key else 0
    _submit(fd, IOC_PR_REGISTER, pr_registration(Key(old_key), Key(new_key), flags, 0),
            op="register", device=device)


def reserve(
    fd: int, key: int, pr_type: PrType, *, ignore_key: bool = False, device: str | None = None
) -> None:
    """Take a reservation of pr_type with our registered key (SCSI rejects ignore_key)."""
    flags = PR_FL_IGNORE_KEY if ignore_key else 0
    _submit(fd, IOC_PR_RESERVE, pr_reservation(Key(key), PrType(pr_type), flags),
            op="reserve", device=device)


def release(fd: int, key: int, pr_type: PrType, *, device: str | None = None) -> None:
    _submit(fd, IOC_PR_RELEASE, pr_reservation(Key(key), PrType(pr_type), 0),
            op="release", device=device)


def preempt(
    fd: int,
    old_key: int,
    new_key: int,
    pr_type: PrType,
    *,
    abort: bool = False,
    device: str | None = None,
) -> None:
    """Remove the registrations of new_key (the victim) using our own registered old_key.

    pr.h's names are misleading: old_key is the caller's key (SCSI RESERVATION KEY) and
    new_key is the key being preempted (SERVICE ACTION RESERVATION KEY). If the victim holds the
    reservation, it passes to us with pr_type. abort also aborts the victim's queued commands
    (through dm-multipath the abort is silently dropped).
    """
    request = IOC_PR_PREEMPT_ABORT if abort else IOC_PR_PREEMPT
    _submit(fd, request, pr_preempt(Key(old_key), Key(new_key), PrType(pr_type), 0),
            op="preempt-abort" if abort else "preempt", device=device)


def clear(fd: int, key: int, *, device: str | None = None) -> None:
    """Drop the reservation and every registration; key must be registered by the caller."""
    _submit(fd, IOC_PR_CLEAR, pr_clear(Key(key), 0, 0), op="clear", device=device)


# 2 nodes x 8 paths fit 4 times over: the first READ KEYS is almost always the only one.
FIRST_READ_KEYS = 64


def read_keys(fd: int, *, device: str | None = None) -> KeyList:
    """Registered keys (Linux 6.19+; NotSupported on older kernels).

    Asks for room for FIRST_READ_KEYS keys (one command for any usual cluster), and again
    with room for the count the device reported if that was more, so the list is never
    silently short.
    """
    op = "read keys"
    want = FIRST_READ_KEYS
    for _ in range(_READ_KEYS_ATTEMPTS):
        array = (ctypes.c_uint64 * max(want, 1))()
        arg = pr_read_keys(0, want, ctypes.addressof(array) if want else 0)
        out = pr_read_keys.from_buffer(_submit(fd, IOC_PR_READ_KEYS, arg, op=op, device=device))
        total = int(out.num_keys)
        if total > MAX_KEYS:
            raise exception_for(
                -errno.EIO, op=op, device=device,
                detail=f"device reports {total} keys, more than the {MAX_KEYS} pr.h can return",
            )
        if total <= want:
            return KeyList(generation=int(out.generation), keys=[Key(k) for k in array[:total]])
        want = total
    raise exception_for(-errno.EAGAIN, op=op, device=device,
                        reason=f"the number of registrations kept changing over "
                               f"{_READ_KEYS_ATTEMPTS} attempts")


def read_reservation(fd: int, *, device: str | None = None) -> Reservation:
    """Current reservation (Linux 6.19+; NotSupported on older kernels). Type 0 = none held."""
    op = "read reservation"
    buf = _submit(fd, IOC_PR_READ_RESERVATION, pr_read_reservation(), op=op, device=device)
    out = pr_read_reservation.from_buffer(buf)
    return reservation_from_raw(Key(out.key), int(out.generation), int(out.type),
                                op=op, device=device)


def reservation_from_raw(
    key: Key, generation: int, type_code: int, *, op: str, device: str | None
) -> Reservation:
    """Interpret the kernel's pr_read_reservation fields (pure; used by tests)."""
    if type_code == 0:
        return Reservation(key=key, generation=generation, type=None)
    try:
        pr_type = PrType(type_code)
    except ValueError:
        detail = f"kernel returned unknown reservation type {type_code}"
        raise exception_for(-errno.EIO, op=op, device=device, detail=detail) from None
    return Reservation(key=key, generation=generation, type=pr_type)
