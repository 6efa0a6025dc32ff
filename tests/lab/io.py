"""I/O helpers shared by the lab tests: what a fenced node's writes look like."""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def opened(dev: str, flags: int = os.O_RDWR) -> Iterator[int]:
    fd = os.open(dev, flags)
    try:
        yield fd
    finally:
        os.close(fd)


def write_block(dev: str) -> int:
    """Write one 4 KiB block with O_DIRECT; 0 or the errno it failed with.

    O_DIRECT so the write reaches the device now (a page-cache write would
    "succeed" on a fenced node); an anonymous mmap is page aligned, as
    O_DIRECT requires.
    """
    buf = mmap.mmap(-1, 4096)
    buf.write(b"w" * 4096)
    try:
        with opened(dev, os.O_WRONLY | os.O_DIRECT) as fd:
            os.write(fd, buf)
            os.fsync(fd)
    except OSError as e:
        return e.errno or -1
    finally:
        buf.close()
    return 0
