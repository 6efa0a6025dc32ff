"""Typed exceptions for persistent-reservation failures, and the one table that picks them.

Every failure, whatever layer noticed it (a pr.h ioctl, the SG_IO fallback, NVMe passthrough),
is expressed as one integer in the pr.h convention -- a negative errno for a local failure or a
positive PR_STS_* status for the device's answer -- and turned into an exception here, so retry
policies and the agent only ever reason about exception types.
"""

from __future__ import annotations

import errno
import os
from typing import NoReturn

# Positive statuses returned by the pr.h ioctls (include/uapi/linux/pr.h, "enum pr_status").
# They are SCSI status bytes / host bytes << 16, which is why SG_IO results map onto them.
PR_STS_SUCCESS = 0x0
PR_STS_IOERR = 0x2
PR_STS_RESERVATION_CONFLICT = 0x18
PR_STS_PATH_FAILED = 0x10000
PR_STS_RETRY_PATH_FAILURE = 0xE0000
PR_STS_PATH_FAST_FAILED = 0xF0000


class FencePrError(Exception):
    """Base of every error fence_pr reports (as pyudev has DeviceError): the message says
    what went wrong and what to do.  Each front end turns it into one line and an exit code
    in one place; anything else escaping is a bug, reported as an internal error."""


class ActionFailed(FencePrError):
    """The action ran and did not achieve what was asked (a device failed, a status could
    not be read); the devices' own reports are logged before it."""


class NotRegistered(FencePrError):
    """This node's own key is absent: it may itself have been fenced, so it must not fence.
    fence_pr's own check, not a kernel outcome."""


class PrError(FencePrError):
    """A persistent-reservation operation failed on one device.

    `code` keeps the raw value (negative errno or positive status) for logs and tests; callers
    should branch on the subclass, not on the code.
    """

    def __init__(self, message: str, *, code: int, op: str, device: str | None) -> None:
        super().__init__(message)
        self.code = code
        self.op = op
        self.device = device


class TransientError(PrError):
    """Base of the failures worth retrying: the same command may succeed a moment later."""


class PathFailure(TransientError):
    """The path to the device failed; another path, or the same one later, may work."""


class DeviceBusy(TransientError):
    """The device cannot take the command right now (e.g. dm map suspended, unit attention)."""


class DeviceGone(TransientError):
    """The device node no longer reaches a device (hot-unplug, path removed, rescan pending)."""


class ReservationConflict(PrError):
    """The device refused the command because of the current reservation/registration state."""


class IoError(PrError):
    """The device (or the response it sent) failed in a way that retrying will not fix."""


class NotSupported(PrError):
    """The kernel, driver or device does not implement this operation: caller may fall back."""


class PermissionDenied(PrError):
    """The kernel refused the operation for this caller or this open mode."""


TRANSIENT: tuple[type[PrError], ...] = (PathFailure, DeviceBusy, DeviceGone)
"""Exception types retry policies should retry (all derive from TransientError)."""

_PERMISSION_REASON = (
    "permission denied: the kernel always refuses persistent-reservation ioctls on partitions "
    "(use the whole device); without CAP_SYS_ADMIN the device must be opened for write "
    "(the two read ioctls only need it opened for read on 7.0+/6.19.y)"
)

# THE mapping table: pr.h code -> (exception type, human-readable reason).
# Note EAGAIN == EWOULDBLOCK on Linux: one entry covers both "dm map suspended" and
# "NVMe multipath has no usable path right now"; both are transient.
_TABLE: dict[int, tuple[type[PrError], str]] = {
    PR_STS_RESERVATION_CONFLICT: (
        ReservationConflict,
        "reservation conflict: another host holds the reservation, or this host's key is "
        "not (or no longer) registered",
    ),
    PR_STS_IOERR: (IoError, "the device reported an I/O error"),
    PR_STS_PATH_FAILED: (PathFailure, "path failed: no connection to the device on this path"),
    PR_STS_RETRY_PATH_FAILURE: (PathFailure, "transient path failure (transport disrupted)"),
    PR_STS_PATH_FAST_FAILED: (PathFailure, "path fast-failed by the transport"),
    -errno.ENOTCONN: (PathFailure, "no usable path to the device (ENOTCONN)"),
    -errno.EAGAIN: (
        DeviceBusy,
        "device temporarily unavailable (EAGAIN: dm map suspended, or no usable NVMe path)",
    ),
    -errno.ENODEV: (DeviceGone, "the device is gone (ENODEV)"),
    -errno.ENXIO: (DeviceGone, "the device is gone or not reachable (ENXIO)"),
    -errno.EIO: (IoError, "I/O error (EIO)"),
    -errno.EOPNOTSUPP: (
        NotSupported,
        "operation not supported by this device, driver or flag combination (EOPNOTSUPP)",
    ),
    -errno.ENOTTY: (NotSupported, "ioctl not implemented by this kernel or driver (ENOTTY)"),
    -errno.EINVAL: (
        NotSupported,
        "rejected as invalid (EINVAL): unknown ioctl on this kernel, or a field the device "
        "does not support",
    ),
    -errno.EPERM: (PermissionDenied, _PERMISSION_REASON + " (EPERM)"),
    -errno.EACCES: (PermissionDenied, _PERMISSION_REASON + " (EACCES)"),
}


def _classify(code: int) -> tuple[type[PrError], str]:
    known = _TABLE.get(code)
    if known is not None:
        return known
    if code > 0:
        return IoError, f"unexpected device status 0x{code:x}"
    name = errno.errorcode.get(-code, f"errno {-code}")
    return PrError, f"{os.strerror(-code)} ({name})"


def exception_for(
    code: int,
    *,
    op: str,
    device: str | None,
    reason: str | None = None,
    detail: str | None = None,
) -> PrError:
    """Build the exception for a non-zero pr.h-convention code.

    `reason` replaces the table's wording when the caller knows better (e.g. SG_IO permissions),
    `detail` is appended (e.g. the raw SCSI sense or NVMe status); the class always comes from
    the table.
    """
    if code == 0:
        raise ValueError("exception_for() called with code 0 (success)")
    cls, text = _classify(code)
    if reason is not None:
        text = reason
    msg = f"{op} failed on {device or '<unknown device>'}: {text}"
    if detail:
        msg += f" [{detail}]"
    return cls(msg, code=code, op=op, device=device)


def raise_for(
    code: int,
    *,
    op: str,
    device: str | None,
    reason: str | None = None,
    detail: str | None = None,
) -> None:
    """Raise the exception for `code`; do nothing for 0 (success)."""
    if code == 0:
        return
    raise exception_for(code, op=op, device=device, reason=reason, detail=detail)


def fail(
    code: int,
    *,
    op: str,
    device: str | None,
    reason: str | None = None,
    detail: str | None = None,
) -> NoReturn:
    """Like raise_for() for a code known to be non-zero; lets type checkers see the raise."""
    raise exception_for(code, op=op, device=device, reason=reason, detail=detail)
