"""Run the device work in a child process the agent can walk away from.

A PR ioctl can sleep uninterruptibly in the kernel: an iSCSI session in recovery queues
commands until replacement_timeout (120 s by default).  A thread stuck there keeps the
whole process -- and the pipes pacemaker-fenced reads to EOF -- alive, so a deadline kept
by threads is not kept at all.  The child does the work with its output going through
pipes; when the deadline passes, the parent reports it and exits, leaving the stuck child
(and nothing of pacemaker's) behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import sys
import time
from collections.abc import Callable

from .budget import Deadline

EXIT_FAIL = 1
# The child gives up at the deadline by itself; the parent allows it this much more
# before walking away from a command stuck in the kernel.
GRACE_S = 3.0


def _exit_code(e: SystemExit) -> int:
    if e.code is None:
        return 0
    return e.code if isinstance(e.code, int) else EXIT_FAIL


def _child(fn: Callable[[], int], out_w: int, err_w: int) -> None:
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    try:
        rc = fn()
    except SystemExit as e:
        rc = _exit_code(e)
    except BaseException as e:  # the parent must get an exit code, whatever happens
        logging.error("Failed: internal error: %s: %s", type(e).__name__, e)
        rc = EXIT_FAIL
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(rc)


def run_bounded(fn: Callable[[], int], deadline: Deadline, what: str) -> int:
    """fn()'s exit code, or EXIT_FAIL once the deadline (and GRACE_S) has passed without it:
    the one hard bound of every entry point (the agent, the watchdog check)."""
    seconds = deadline.remaining() + GRACE_S
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(out_r)
        os.close(err_r)
        _child(fn, out_w, err_w)
    os.close(out_w)
    os.close(err_w)
    sinks = {out_r: sys.stdout, err_r: sys.stderr}
    end = time.monotonic() + seconds
    try:
        while sinks:
            left = end - time.monotonic()
            if left <= 0:
                logging.error("Failed: %s gave no answer within %.0f s (power_timeout); a "
                              "command is stuck in the kernel (process %d left behind)",
                              what, deadline.seconds, pid)
                return EXIT_FAIL
            ready, _, _ = select.select(list(sinks), [], [], left)
            for fd in ready:
                data = os.read(fd, 65536)
                if not data:
                    del sinks[fd]
                    continue
                sink = sinks[fd]
                sink.flush()
                os.write(sink.fileno(), data)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else EXIT_FAIL
    finally:
        os.close(out_r)
        os.close(err_r)
