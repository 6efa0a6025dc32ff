"""Linux ioctl number encoding (asm-generic/ioctl.h, as used on x86-64) and one call wrapper.

The wrapper returns the kernel's convention (>= 0 result, or -errno) instead of raising, so
every caller routes failures through errors.raise_for() and nowhere else.
"""

from __future__ import annotations

import errno
import fcntl

_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = 8
_IOC_SIZESHIFT = 16
_IOC_DIRSHIFT = 30
_IOC_NONE = 0
_IOC_WRITE = 1
_IOC_READ = 2
_IOC_SIZEMASK = (1 << 14) - 1


def ioc(direction: int, type_: str, nr: int, size: int) -> int:
    if not 0 <= size <= _IOC_SIZEMASK:
        raise ValueError(f"ioctl argument size {size} does not fit in 14 bits")
    return (
        (direction << _IOC_DIRSHIFT)
        | (size << _IOC_SIZESHIFT)
        | (ord(type_) << _IOC_TYPESHIFT)
        | (nr << _IOC_NRSHIFT)
    )


def io(type_: str, nr: int) -> int:
    return ioc(_IOC_NONE, type_, nr, 0)


def iow(type_: str, nr: int, size: int) -> int:
    return ioc(_IOC_WRITE, type_, nr, size)


def ior(type_: str, nr: int, size: int) -> int:
    return ioc(_IOC_READ, type_, nr, size)


def iowr(type_: str, nr: int, size: int) -> int:
    return ioc(_IOC_READ | _IOC_WRITE, type_, nr, size)


def call(fd: int, request: int, buf: bytearray | None = None) -> int:
    """Issue an ioctl; return its (possibly positive) result or -errno.

    A mutable bytearray with mutate_flag=True is what makes fcntl hand back the positive
    return value (PR_STS_*, NVMe status, namespace ID) and copy the kernel's output into buf.
    """
    try:
        if buf is None:
            return int(fcntl.ioctl(fd, request, 0))
        return int(fcntl.ioctl(fd, request, buf, True))
    except OSError as exc:
        return -(exc.errno or errno.EIO)
