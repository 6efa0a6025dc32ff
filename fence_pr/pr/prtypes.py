"""Values shared by the pr.h binding and its fallbacks, so callers never care which one answered."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from .errors import FencePrError

U64_MAX = (1 << 64) - 1  # a reservation key is 64 bits, in SCSI and NVMe alike


class KeyRangeError(FencePrError, ValueError):
    """A value that is not a 64-bit unsigned reservation key."""


class Key(int):
    """A reservation key, range-checked once, here, where it is made: ctypes would silently
    wrap a key that does not fit, struct would fail far from the cause.  It prints as
    sg_persist and fence_scsi print keys (0x-prefixed lowercase hex, no padding), so a
    message can never show a key in decimal.  0 is NO_KEY: "no key" to REGISTER, no holder
    in a reservation; a node's key is never 0 (keys.parse_key and derive_key refuse it)."""

    __slots__ = ()

    def __new__(cls, value: int) -> Key:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= U64_MAX:
            raise KeyRangeError(f"{value!r} is not a 64-bit unsigned reservation key")
        return super().__new__(cls, value)

    def __str__(self) -> str:
        return f"0x{int(self):x}"

    def __repr__(self) -> str:
        return f"Key({self})"


NO_KEY = Key(0)


class PrType(IntEnum):
    """Reservation types in <linux/pr.h> numbering (NVMe uses the same numbers, SCSI does not)."""

    WRITE_EXCLUSIVE = 1
    EXCLUSIVE_ACCESS = 2
    WRITE_EXCLUSIVE_REG_ONLY = 3
    EXCLUSIVE_ACCESS_REG_ONLY = 4
    WRITE_EXCLUSIVE_ALL_REGS = 5
    EXCLUSIVE_ACCESS_ALL_REGS = 6

    @classmethod
    def from_scsi(cls, code: int) -> PrType:
        """Convert an SPC type code (fence_scsi's `-T 5` is WRITE_EXCLUSIVE_REG_ONLY)."""
        try:
            return _FROM_SCSI[code]
        except KeyError:
            raise ValueError(f"unknown SCSI persistent reservation type {code}") from None

    @classmethod
    def from_nvme(cls, code: int) -> PrType:
        """NVMe reservation types share pr.h's numbering; this only validates."""
        try:
            return cls(code)
        except ValueError:
            raise ValueError(f"unknown NVMe reservation type {code}") from None

    def to_scsi(self) -> int:
        return _TO_SCSI[self]

    @property
    def all_registrants(self) -> bool:
        """All-registrants types have no single holder: devices report holder key 0."""
        return self in (PrType.WRITE_EXCLUSIVE_ALL_REGS, PrType.EXCLUSIVE_ACCESS_ALL_REGS)


_TO_SCSI: dict[PrType, int] = {
    PrType.WRITE_EXCLUSIVE: 1,
    PrType.EXCLUSIVE_ACCESS: 3,
    PrType.WRITE_EXCLUSIVE_REG_ONLY: 5,
    PrType.EXCLUSIVE_ACCESS_REG_ONLY: 6,
    PrType.WRITE_EXCLUSIVE_ALL_REGS: 7,
    PrType.EXCLUSIVE_ACCESS_ALL_REGS: 8,
}
_FROM_SCSI: dict[int, PrType] = {v: k for k, v in _TO_SCSI.items()}


@dataclass(frozen=True)
class KeyList:
    """Registered keys. SCSI lists one entry per registered path (I_T nexus), so duplicates are
    normal; NVMe lists one per registered controller/host."""

    generation: int
    keys: list[Key]


@dataclass(frozen=True)
class Reservation:
    """The current reservation; `type is None` means the device holds no reservation."""

    key: Key
    generation: int
    type: PrType | None

    @property
    def held(self) -> bool:
        return self.type is not None


class MalformedResponse(FencePrError, ValueError):
    """A device response buffer does not parse; the device or transport misbehaved."""


class TruncatedResponse(MalformedResponse):
    """The buffer was too small for what the device wanted to return; `needed` bytes would do."""

    def __init__(self, message: str, *, needed: int) -> None:
        super().__init__(message)
        self.needed = needed
