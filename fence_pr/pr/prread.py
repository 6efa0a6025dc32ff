"""Read registrations and the reservation, with the pre-6.19 fallbacks.

IOC_PR_READ_KEYS / READ_RESERVATION exist from Linux 6.19; on older kernels
(RHEL 9/10, Debian 13, Ubuntu LTS) SCSI falls back to PERSISTENT RESERVE IN
over SG_IO and NVMe to the Reservation Report passthrough.  The reason is
logged once per process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TypeVar

from . import nvme_passthru, prh, sgio
from .errors import NotSupported
from .prtypes import KeyList, Reservation

log = logging.getLogger(__name__)
_fallback_logged = False
FORCE_FALLBACK = os.environ.get("FENCE_PR_FORCE_FALLBACK") == "1"


def _note_fallback(device: str, why: str) -> None:
    global _fallback_logged
    if not _fallback_logged:
        log.info("%s: %s; reading keys with the transport's own command instead", device, why)
        _fallback_logged = True


T = TypeVar("T")


def _read(fd: int, device: str, ioctl: Callable[..., T], fallback: Callable[..., T],
          ioctl_name: str, timeout_ms: int) -> T:
    """The pr.h ioctl (the kernel times its own command), else the transport's command,
    which carries `timeout_ms`: what is left of the run's budget."""
    if not FORCE_FALLBACK:
        try:
            return ioctl(fd, device=device)
        except NotSupported as e:
            _note_fallback(device, f"kernel lacks {ioctl_name} ({e})")
    return fallback(fd, device=device, timeout_ms=timeout_ms)


def read_keys(fd: int, *, nvme: bool, device: str, timeout_ms: int) -> KeyList:
    return _read(fd, device, prh.read_keys,
                 nvme_passthru.read_keys if nvme else sgio.read_keys, "IOC_PR_READ_KEYS",
                 timeout_ms)


def read_reservation(fd: int, *, nvme: bool, device: str, timeout_ms: int) -> Reservation:
    return _read(fd, device, prh.read_reservation,
                 nvme_passthru.read_reservation if nvme else sgio.read_reservation,
                 "IOC_PR_READ_RESERVATION", timeout_ms)
