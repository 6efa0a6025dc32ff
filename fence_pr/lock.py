"""One fence_pr at a time on this node: Pacemaker may retry while a slow run still works.

An flock on a file in /run/lock: the kernel drops it when the holder exits, however it
exits, so a killed agent never leaves a stale lock. flock needs only an open descriptor,
so the file is opened read-only and an unprivileged agent can share root's lock file.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

LOCK_PATH = "/run/lock/fence_pr.lock"
# Where /run/lock is missing (a minimal container); every fence_pr then uses this one.
FALLBACK_PATH = "/tmp/fence_pr.lock"
POLL_S = 0.05


class LockTimeout(Exception):
    """Another fence_pr held the lock for longer than this run may wait."""


@contextmanager
def node_lock(wait_s: float, path: str = LOCK_PATH) -> Iterator[None]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except FileNotFoundError:
        fd = os.open(FALLBACK_PATH, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        end = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                if time.monotonic() >= end:
                    raise LockTimeout(
                        f"another fence_pr on this node still holds {path} after {wait_s:.0f} s; "
                        "it is working on the devices -- try again when it has finished"
                    ) from None
                time.sleep(POLL_S)
        yield
    finally:
        os.close(fd)
