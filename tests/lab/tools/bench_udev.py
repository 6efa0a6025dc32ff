"""Which openers make udev probe a LUN again, and what that costs at the target.

udev watches sd and dm devices with inotify; closing one that was opened for writing makes
udevd synthesize a `change` uevent and run blkid on it, whose reads reach the target.  The
bench must not count such probes for an agent that did not cause them.  Run in the guest:

    .venv/bin/python -m tests.lab.runner.vm '.venv/bin/python -m tests.lab.tools.bench_udev'
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..fixtures.iscsi import IscsiLab
from ..fixtures.packaged import install
from ..fixtures.topology import take_unit_attention
from . import bench_guest as bg
from .bench_trace import UEVENT, monitoring

N = 4


def window(lab: IscsiLab, name: str, action: Callable[[], object]) -> None:
    """`action` with udev idle before and after: its change uevents and commands per LUN."""
    bg.drain_udev(120)
    before = bg.target_cmds(lab, N)
    uevents: list[str] = []
    with monitoring(uevents):
        time.sleep(1)  # the monitor is listening
        action()
        time.sleep(3)  # inotify's change uevents are queued
        bg.drain_udev(120)
    changes = [dev for src, _, kind, dev in UEVENT.findall("".join(uevents))
               if src == "KERNEL" and kind == "change"]
    after = bg.target_cmds(lab, N)
    print(f"{name}: {len(changes)} change uevents; commands per LUN "
          f"{[a - b for a, b in zip(after, before, strict=True)]}", flush=True)


def main() -> int:
    lab = IscsiLab(luns=N, nodes=2, paths=2, size_mb=1)
    lab.maps[1] = bg.make_maps(lab, 1)
    bg.drain_udev(600)
    subprocess.run(["dmsetup", "mknodes"], check=False)
    install(Path(bg.INSTALLED).parents[1])
    bg.unfence(lab.maps[1], "node1")
    sds = [lun.paths[(1, 1)].dev for lun in lab.luns]
    window(lab, "nothing", lambda: None)
    window(lab, "sg_persist -n -i -k on node1's sd paths (the bench's key check)",
           lambda: [bg.sh(["sg_persist", "-n", "-i", "-k", d]) for d in sds])
    window(lab, "fence_pr -o status on node1's maps",
           lambda: bg.sh(bg.fence_pr("node1", "status", "node1", lab.maps[1])))
    def read_each() -> None:
        for d in sds:
            take_unit_attention(d)

    window(lab, "one O_DIRECT read on node1's sd paths (taking unit attentions)", read_each)
    return 0


if __name__ == "__main__":
    sys.exit(main())
