"""fence_pr_helper: an unprivileged, multipath-aware drop-in for qemu-pr-helper.

Command line and socket as QEMU's helper has them, so libvirt can name it as `pr_helper` in
qemu.conf: -k/--socket, -f/--pidfile, -d/--daemon, -u/--user, -g/--group, -v, -q, systemd
socket activation.  It needs no capabilities: the guest's disk arrives as a descriptor
QEMU opened, and the map's path devices are opened through a group that may write them
(packaging/udev/60-fence_pr.rules).  Started as root, it drops to -u/-g before serving.

This module is the helper's one place that turns a start-up error into a message and an
exit code; requests are answered in translate.answer.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import grp
import logging
import os
import pwd
import signal
import socket
import stat
import sys
from collections.abc import Callable, Iterator

from ..lu import LogicalUnit
from ..pr.errors import FencePrError
from . import translate
from .server import Server

log = logging.getLogger("fence_pr_helper")

DEFAULT_SOCKET = "/run/fence_pr_helper.sock"
DEFAULT_PIDFILE = "/run/fence_pr_helper.pid"
COMMAND_TIMEOUT_S = 25.0
"""Each command's budget, retries and path failover included: inside the 30 s a Linux
guest's sd gives a command, so the guest hears our answer, not its own timeout."""
SD_LISTEN_FDS_START = 3
VERSION = "fence_pr_helper 0.1.0"


class StartError(FencePrError):
    """The helper cannot start as asked; the message says what to change."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fence_pr_helper",
        description="Persistent Reservation helper for QEMU (pr-manager-helper protocol), "
                    "unprivileged and multipath-aware, on fence_pr's engine.")
    p.add_argument("-V", "--version", action="version", version=VERSION)
    p.add_argument("-d", "--daemon", action="store_true", help="run in the background")
    p.add_argument("-f", "--pidfile", metavar="PATH",
                   help=f"PID file (default {DEFAULT_PIDFILE} with --daemon)")
    p.add_argument("-k", "--socket", metavar="PATH",
                   help=f"path to the unix socket (default {DEFAULT_SOCKET})")
    p.add_argument("-T", "--trace", metavar="SPEC",
                   help="accepted for qemu-pr-helper compatibility; logging is -v")
    p.add_argument("-u", "--user", help="user to run as when started as root")
    p.add_argument("-g", "--group", help="group to run as when started as root (one that "
                   "may write the multipath maps' path devices)")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--timeout", type=float, default=COMMAND_TIMEOUT_S, metavar="SECONDS",
                   help=f"budget of one PR command, failover included "
                        f"(default {COMMAND_TIMEOUT_S:g})")
    p.add_argument("file", nargs="?", help=argparse.SUPPRESS)  # qemu-pr-helper's unused FILE
    return p


def _activated() -> socket.socket | None:
    """The listening socket systemd passed (LISTEN_FDS), if it passed one to this process."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = int(os.environ.get("LISTEN_FDS", "0") or 0)
    if count == 0:
        return None
    if count > 1:
        raise StartError(f"socket activation passed {count} sockets; give fence_pr_helper one")
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)
    return socket.socket(fileno=SD_LISTEN_FDS_START)


def _safe_parent(path: str) -> None:
    """Nobody but root and us may replace the socket or pidfile under us."""
    parent = os.path.dirname(path) or "/"
    st = os.stat(parent)
    if st.st_uid not in (0, os.geteuid()):
        raise StartError(f"{parent} belongs to uid {st.st_uid}: put {path} in a directory "
                         "root or this user owns")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        raise StartError(f"{parent} is writable by others: put {path} elsewhere (/run)")


def _listen(path: str) -> socket.socket:
    """A unix socket at `path`, mode 0660: the helper's user and group may connect.  A
    socket left by a helper that died is replaced; a live one or anything else is not."""
    if not os.path.isabs(path):
        raise StartError(f"socket path {path} must be absolute")
    _safe_parent(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.geteuid():
            raise StartError(f"{path} exists and is not this user's socket: remove it or "
                             "choose another -k")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale: nobody listens
        else:
            raise StartError(f"another helper listens on {path}")
        finally:
            probe.close()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)
    try:
        s.bind(path)
    finally:
        os.umask(old)
    s.listen(64)
    return s


def _write_pidfile(path: str) -> int:
    """Write and lock the pidfile (kept open: the lock says the helper runs)."""
    _safe_parent(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise StartError(f"pidfile {path}: {e.strerror}") from None
    if os.fstat(fd).st_uid != os.geteuid():
        os.close(fd)
        raise StartError(f"pidfile {path} belongs to another user")
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StartError(f"pidfile {path} is locked: a helper already runs") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _drop_to(user: str | None, group: str | None) -> None:
    """From root to -u/-g, supplementary groups cleared (the group given is the one that
    opens path devices); not root: -u/-g must name who we already are."""
    uid = _id(user, lambda n: pwd.getpwnam(n).pw_uid, "user") if user else None
    gid = _id(group, lambda n: grp.getgrnam(n).gr_gid, "group") if group else None
    if os.geteuid() != 0:
        if (uid is not None and uid != os.geteuid()) or (gid is not None and
                                                         gid != os.getegid()):
            raise StartError("-u/-g change the user only when started as root")
        return
    if uid is None:
        log.warning("running as root: fence_pr_helper needs no privileges; give -u and -g")
        return
    os.setgroups([])
    os.setgid(gid if gid is not None else pwd.getpwuid(uid).pw_gid)
    os.setuid(uid)


def _id(name: str, lookup: Callable[[str], int], what: str) -> int:
    try:
        return lookup(name)
    except KeyError:
        if name.isdigit():
            return int(name)
        raise StartError(f"no {what} {name}") from None


def _daemonize() -> None:
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


@contextlib.contextmanager
def _stop_on_signals(server: Server) -> Iterator[None]:
    old = signal.set_wakeup_fd(server.wakeup_fd)
    handlers = {sig: signal.signal(sig, lambda *_: None)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        yield
    finally:
        signal.set_wakeup_fd(old)
        for sig, h in handlers.items():
            signal.signal(sig, h)


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    level = logging.ERROR if args.quiet else (logging.WARNING, logging.INFO,
                                              logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="fence_pr_helper: %(levelname)s: %(message)s")
    if args.trace:
        log.info("-T %s ignored: fence_pr_helper logs with -v", args.trace)
    listener = _activated()
    if listener is not None and args.socket:
        raise StartError("the unix socket cannot be set (-k) under socket activation")
    path = None
    if listener is None:
        path = args.socket or DEFAULT_SOCKET
        listener = _listen(path)
    if args.daemon:
        _daemonize()
    pidfile = args.pidfile or (DEFAULT_PIDFILE if args.daemon else None)
    if pidfile:
        _write_pidfile(pidfile)
    _drop_to(args.user, args.group)
    timeout = args.timeout
    server = Server(listener, lambda fd, cdb, params: translate.answer(
        fd, cdb, params, open_lu=lambda f: LogicalUnit.from_fd(f, timeout=timeout)))
    log.info("serving on %s", path or "the socket systemd passed")
    with _stop_on_signals(server):
        server.serve()
    listener.close()
    if path:
        with contextlib.suppress(OSError):
            os.unlink(path)
    return 0


def main() -> None:
    try:
        sys.exit(run(sys.argv[1:]))
    except FencePrError as e:
        print(f"fence_pr_helper: {e}", file=sys.stderr)
        sys.exit(1)
    except OSError as e:
        print(f"fence_pr_helper: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
