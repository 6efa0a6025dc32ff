"""The demo's story, inside the lab guest: two nodes, one fenced, in plain words."""

from __future__ import annotations

import errno
import time

from .agentrun import KEYS, Node
from .io import write_block
from .topology import LioLab, scsi_keys


def say(text: str) -> None:
    print(text, flush=True)


def main() -> int:
    say("Building shared storage: 2 LUNs (LIO ramdisks), each node reaching each LUN over "
        "2 paths, one dm-multipath map per LUN per node.")
    lab = LioLab(luns=2, nodes=2, paths=2)
    n1, n2 = Node("node1", lab.make_maps(1)), Node("node2", lab.make_maps(2))
    for n in (n1, n2):
        say(f"  {n.name} sees {', '.join(n.devices)}; its key is 0x{n.key:x}")
    for n in (n1, n2):
        t = time.monotonic()
        r = n.run("on", n.name)
        say(f"{n.name} unfences itself (fence_pr -o on): exit {r.rc} in "
            f"{time.monotonic() - t:.2f}s")
        if r.rc:
            say(r.err)
            return 1
    probe = next(iter(lab.luns[0].paths.values())).dev
    say(f"Keys on LUN 0 as the target reports them: "
        f"{', '.join(f'0x{k:x}' for k in scsi_keys(probe))} (one per registered path)")
    lab.check_paths()
    say(f"node2 writes to {n2.devices[0]}: "
        f"{'ok' if write_block(n2.devices[0]) == 0 else 'FAILED'}")
    t = time.monotonic()
    r = n1.pacemaker("off", "node2")
    took = time.monotonic() - t
    say(f"node1 fences node2 (pacemaker-fenced style, action=off on stdin): exit {r.rc}, "
        f"took {took:.2f}s")
    if r.rc:
        say(r.err)
        return 1
    say(f"Keys on LUN 0 now: {', '.join(f'0x{k:x}' for k in scsi_keys(probe))} "
        f"(node2's 0x{KEYS['node2']:x} is gone)")
    lab.check_paths()
    err = write_block(n2.devices[0])
    verdict = "refused with EBADE (reservation conflict)" if err == errno.EBADE else f"errno {err}"
    say(f"node2 writes again: {verdict}")
    say(f"node1 writes: {'ok' if write_block(n1.devices[0]) == 0 else 'FAILED'}")
    r = n1.run("status", "node2")
    say(f"fence_pr -o status -n node2: {r.out.strip()} (exit {r.rc})")
    r = n2.run("on", "node2")
    lab.check_paths()
    rejoined = write_block(n2.devices[0])
    say(f"node2 rejoins (fence_pr -o on): exit {r.rc}; "
        f"write {'ok' if rejoined == 0 else f'FAILED (errno {rejoined})'}")
    ok = err == errno.EBADE and r.rc == 0 and rejoined == 0
    say("Demo " + ("complete: node2 was cut off the storage and re-admitted." if ok
                   else "FAILED: node2 could still write."))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
