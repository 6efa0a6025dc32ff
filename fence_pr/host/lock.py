"""One fence_pr at a time on this node: Pacemaker may retry while a slow run still works.

An flock on /run/fence_pr/lock: the kernel drops it when the holder exits, however it
exits, so a killed agent never leaves a stale lock.  flock needs only a descriptor open
for reading, so whoever can open the file can hold the lock and stall every `on` and `off`
of this node: the file lives in a directory only root can write (0750 root:haclient, made
by the agent or the packages' tmpfiles.d entry), it is opened without following links,
and a directory or file that another user owns or can write is refused.  An unprivileged
agent (a member of haclient) shares root's lock; it cannot create it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..pr.errors import FencePrError

LOCK_DIR = "/run/fence_pr"
LOCK_NAME = "lock"
GROUP = "haclient"  # Pacemaker's: members may run the agent without root (README)
POLL_S = 0.05


class LockError(FencePrError):
    """The node lock cannot be taken."""


class LockTimeout(LockError):
    """Another fence_pr held the lock for longer than this run may wait."""


def _group_id() -> int:
    try:
        return grp.getgrnam(GROUP).gr_gid
    except KeyError:
        return 0


def _trusted(st: os.stat_result, what: str, path: str) -> None:
    """Owned by root or by this agent's own user, and writable by no one else."""
    if st.st_uid not in (0, os.geteuid()):
        raise LockError(f"{what} {path} belongs to uid {st.st_uid}, not root: another user "
                        "could hold the node lock; remove it and run again")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise LockError(f"{what} {path} is writable by others (mode "
                        f"{stat.S_IMODE(st.st_mode):04o}): another user could hold the node "
                        "lock; remove it and run again")


def _open_dir(path: str) -> int:
    """The lock directory, made 0750 root:haclient where it is missing."""
    # Made by root; anyone else, or a missing parent, is told so by the open below.
    with contextlib.suppress(FileExistsError, FileNotFoundError, PermissionError):
        os.mkdir(path, 0o700)
        os.chown(path, 0, _group_id())
        os.chmod(path, 0o750)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise LockError(f"cannot open the lock directory {path}: {e.strerror}; run fence_pr "
                        "as root once, or install the package's tmpfiles.d entry") from None
    try:
        _trusted(os.fstat(fd), "lock directory", path)
    except LockError:
        os.close(fd)
        raise
    return fd


def lock_path(directory: str = LOCK_DIR) -> str:
    return os.path.join(directory, LOCK_NAME)


def _open_lock(directory: str) -> int:
    path = lock_path(directory)
    dfd = _open_dir(directory)
    try:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
        try:
            fd = os.open(LOCK_NAME, flags | os.O_CREAT | os.O_EXCL, 0o640, dir_fd=dfd)
            with contextlib.suppress(PermissionError):  # root's group for root's file
                os.fchown(fd, -1, _group_id())
        except FileExistsError:
            fd = os.open(LOCK_NAME, flags, dir_fd=dfd)
    except OSError as e:
        what = "is a symbolic link" if e.errno == errno.ELOOP else e.strerror
        raise LockError(f"cannot open the lock file {path}: {what}") from None
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise LockError(f"the lock file {path} is not a regular file; remove it")
        _trusted(st, "lock file", path)
    except LockError:
        os.close(fd)
        raise
    return fd


@contextmanager
def node_lock(wait_s: float, directory: str = LOCK_DIR) -> Iterator[None]:
    fd = _open_lock(directory)
    path = lock_path(directory)
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
