"""The public library API: persistent reservations on one shared logical unit.

A `LogicalUnit` is a SCSI disk, an NVMe namespace or a dm-multipath map, named by path,
WWID or an open descriptor.  Each method is one PR operation done the way the kernel's
dm-multipath PR code does not: REGISTER on every path (each is its own I_T nexus), the
whole-LU commands on one path device with failover (so PREEMPT AND ABORT really aborts),
reads with the pre-6.19 fallbacks.  The agent and the QEMU helper are two front ends on
the same engine functions these call.

    from fence_pr.lu import LogicalUnit
    from fence_pr.pr import Key, PrType

    lu = LogicalUnit.open("/dev/mapper/mpatha")
    lu.register(Key(0xabc))                      # every path, replacing what each held
    lu.reserve(Key(0xabc), PrType.WRITE_EXCLUSIVE_REG_ONLY)
    lu.preempt(Key(0xabc), Key(0xdef), PrType.WRITE_EXCLUSIVE_REG_ONLY)
    assert Key(0xdef) not in lu.read_keys().keys

Every failure is a `fence_pr.pr.FencePrError`: `ReservationConflict`, a `TransientError`
once every path and retry within the timeout failed, `NotSupported`, ... (fence_pr.pr.errors).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import engine
from .devices import Storage, resolve_all, resolve_fd
from .host.budget import Deadline
from .pr.prtypes import NO_KEY, Key, KeyList, PrType, Reservation

DEFAULT_TIMEOUT_S = 30.0
"""Each call's budget, retries and failover included (the agent uses power_timeout)."""


@dataclass(frozen=True)
class Registered:
    """Where a REGISTER took: `paths` registered, `left_out` one line per path that was not
    (dead, or registered under another key).  NVMe registers the host: one path."""

    paths: tuple[str, ...]
    left_out: tuple[str, ...]


class LogicalUnit:
    """One LU and its paths, as resolved when it was opened (open again to see new paths)."""

    def __init__(self, storage: Storage, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.storage = storage
        self.timeout = timeout

    @classmethod
    def open(cls, name: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> LogicalUnit:
        """By /dev path, /dev/disk/by-* link or WWID.  DeviceRefused says what to name
        instead (a partition, a loop device, a non-multipath dm device)."""
        return cls(resolve_all([name], Deadline(timeout))[0], timeout=timeout)

    @classmethod
    def from_fd(cls, fd: int, *, timeout: float = DEFAULT_TIMEOUT_S) -> LogicalUnit:
        """The LU behind a descriptor the caller opened (the QEMU helper's case)."""
        return cls(resolve_fd(fd, Deadline(timeout)), timeout=timeout)

    def _deadline(self) -> Deadline:
        return Deadline(self.timeout)

    def __str__(self) -> str:
        return str(self.storage)

    def register(self, new_key: Key, *, old_key: Key = NO_KEY,
                 ignore_existing: bool = True) -> Registered:
        """REGISTER (`ignore_existing=False`: old_key must be what each path holds) or
        REGISTER AND IGNORE EXISTING KEY; new_key NO_KEY unregisters.  On SCSI every path,
        including paths dm failed (the PR command goes to the disk, not through dm)."""
        # With IGNORE the old key is not checked; NVMe still needs one to replace what the
        # host holds (old 0 + IGNORE is a plain Register there, which conflicts).
        old = new_key if ignore_existing and new_key != NO_KEY else old_key
        done, left_out = engine.register_paths(self.storage, old, new_key, self._deadline(),
                                               ignore=ignore_existing)
        return Registered(tuple(p.node for p in done), tuple(left_out))

    def reserve(self, key: Key, pr_type: PrType) -> None:
        engine.reserve(self.storage, key, pr_type, self._deadline())

    def release(self, key: Key, pr_type: PrType) -> None:
        engine.release(self.storage, key, pr_type, self._deadline())

    def clear(self, key: Key) -> None:
        """Drop the reservation and every registration (of every path and host)."""
        engine.clear(self.storage, key, self._deadline())

    def preempt(self, key: Key, victim: Key, pr_type: PrType, *, abort: bool = True) -> None:
        """Remove `victim`'s registrations with our registered `key`; with `abort`, its
        queued commands too (plain PREEMPT on LIO tcm_loop paths, which wedge on it)."""
        engine.preempt(self.storage, key, victim, pr_type, self._deadline(), abort=abort)

    def read_keys(self) -> KeyList:
        """Every registration: on SCSI one entry per registered path (I_T nexus)."""
        return engine.keys_of(self.storage, self._deadline())

    def read_reservation(self) -> Reservation:
        return engine.reservation_of(self.storage, self._deadline())

    def registrations_of(self, key: Key) -> tuple[int, int]:
        """Read-back verification: (times `key` is registered, times it should be: once per
        path on SCSI, once on NVMe)."""
        keys = self.read_keys().keys
        return keys.count(key), engine.expected_count(self.storage, len(self.storage.paths))
