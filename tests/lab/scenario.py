"""What several lab test files do the same way: no test module imports another.

Guest-side helpers: the guest kernel's version, the fault matrix's timing, the NVMe nodes'
native-multipath heads, the cluster's LUN reset.
"""

from __future__ import annotations

import os
import time

from .agentrun import Node, Result
from .topology import dm_message, dm_path_states, scsi_clear


def kernel_at_least(major: int, minor: int) -> bool:
    rel = os.uname().release.split("+")[0].split("-")[0].split(".")
    return (int(rel[0]), int(rel[1])) >= (major, minor)


NVMET_RESV = kernel_at_least(6, 13)  # nvmet reservations

# --- the fault matrix ---------------------------------------------------------------------

TIMEOUT_S = 15
# The budget starts after the agent's start (imports, udev: seconds under TCG on a busy
# host); `on` reads the status first and may spend the whole budget retrying a gone path;
# the parent adds GRACE_S of grace (fence_pr/host/bounded.py).  The point is the order of
# magnitude: without the bound, iSCSI recovery holds a command for 120 s.
BOUND_S = 2 * TIMEOUT_S + 10
ACTIONS = [("on", "node1"), ("off", "node2"), ("status", "node2"), ("monitor", None)]


def timed(node: Node, action: str, target: str | None) -> tuple[Result, float]:
    t = time.monotonic()
    r = node.run(action, target, "--power-timeout", str(TIMEOUT_S))
    return r, time.monotonic() - t


# --- NVMe: one kernel cannot hold two hosts apart under one native-multipath head ---------

def assert_unsupported(node: Node, r: Result | None = None) -> None:
    """6.12's nvmet has no reservations: `on` fails, says so, and registers nothing."""
    r = r or node.run("on", node.name)
    assert r.rc == 1 and "not supported" in r.err.lower() and "Traceback" not in r.err, r


def heads_of(lab, node: int) -> list[str]:  # type: ignore[no-untyped-def]
    path = min(p for (n, p) in lab.ctrls if n == node)
    return sorted({lab.dev(node, path, nsid) for nsid in lab.nsids})


def swap_nodes(lab, gone: int, back: int) -> None:  # type: ignore[no-untyped-def]
    for (n, p) in list(lab.ctrls):
        if n == gone:
            lab.delete_controller(n, p)
    for p in range(lab.paths):
        lab.connect(back, p)


# --- the cluster --------------------------------------------------------------------------

START_TIMEOUT = 420  # both nodes online and unfenced, under TCG (nominal: pace.py)


def reset_luns(lio) -> None:  # type: ignore[no-untyped-def]
    """Every path running, no dm path failed, no registration: what clean_lio guarantees."""
    for lun in lio.luns:
        for p in lun.paths.values():
            p.set_state("running")
        for maps in lio.maps.values():
            for mm, s in dm_path_states(maps[lun.index]).items():
                if s == "F":
                    dm_message(maps[lun.index], f"reinstate_path {mm}")
        scsi_clear(next(iter(lun.paths.values())).dev)
