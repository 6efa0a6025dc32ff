"""One fence_pr at a time on this node: Pacemaker may retry while a slow run still works.

An flock on a file in /run/lock: the kernel drops it when the holder exits, however it
exits, so a killed agent never leaves a stale lock. flock needs only an open descriptor,
so the file is opened read-only and an unprivileged agent can share root's lock file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
                        f"another fence_pr on this node{describe_holder(fd)} still holds "
                        f"{path} after {wait_s:.0f} s; it is working on the devices -- try "
                        "again when it has finished"
                    ) from None
                time.sleep(POLL_S)
        yield
    finally:
        os.close(fd)


def _holder_pid(fd: int, locks: str = "/proc/locks") -> int | None:
    """The pid /proc/locks gives for the flock on fd's file (the process that took it)."""
    st = os.fstat(fd)
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = Path(locks).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        f = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"; "->" marks a waiter.
        if len(f) >= 6 and f[1] == "FLOCK" and f[5] == ident:
            return int(f[4]) if f[4].isdigit() else None
    return None


def describe_holder(fd: int) -> str:
    """' (process N, <state>, with <devices> open)': a holder stuck in the kernel (state D,
    an ioctl on a device in recovery) keeps the lock until the kernel lets it go, and the
    devices it has open say which one to look at.  Empty when /proc does not tell."""
    pid = _holder_pid(fd)
    if pid is None:
        return ""
    proc = Path(f"/proc/{pid}")
    state = _state(proc)
    if state is None:
        return f" (process {pid})"
    with contextlib.suppress(OSError):  # the work runs in threads: one may be the stuck one
        if any(_state(t) == "D" for t in proc.joinpath("task").iterdir()):
            state = "D"
    what = STATES.get(state, f"state {state}")
    devices = []
    with contextlib.suppress(OSError):
        for link in proc.joinpath("fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(link)
                if stat.S_ISBLK(os.stat(link).st_mode) and target not in devices:
                    devices.append(target)
    opened = f", with {', '.join(sorted(devices))} open" if devices else ""
    return f" (process {pid}, {what}{opened})"


def _state(proc: Path) -> str | None:
    try:
        return proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


STATES = {
    "D": "stuck in the kernel (uninterruptible sleep: a command on a device that does not "
         "answer)",
    "R": "running",
    "S": "waiting",
}
