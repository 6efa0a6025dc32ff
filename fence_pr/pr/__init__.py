"""The <linux/pr.h> binding and its fallbacks: the eight PR ioctls (prh), the reads for
kernels before 6.19 over SG_IO (sgio) and NVMe passthrough (nvme_passthru), chosen by
prread; the values they share (prtypes) and the one table that turns every kernel
outcome into an exception (errors).  Nothing here knows about nodes, plans or Pacemaker.
"""

from __future__ import annotations

from .errors import FencePrError, PrError, TransientError
from .prread import read_keys, read_reservation
from .prtypes import NO_KEY, Key, KeyList, PrType, Reservation

__all__ = ["NO_KEY", "FencePrError", "Key", "KeyList", "PrError", "PrType", "Reservation",
           "TransientError", "read_keys", "read_reservation"]
