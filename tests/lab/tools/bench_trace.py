"""Which SCSI commands reach LIO while fence_pr fences node2 off N LUNs, by opcode and LUN.

LIO's `target_sequencer_start` tracepoint names the initiator, LUN and CDB of every
command, so a per-LUN count above 3 can be told apart: fence_pr's PR commands or someone
else's.  Run in the guest:

    .venv/bin/python -m tests.lab.runner.vm '.venv/bin/python -m tests.lab.tools.bench_trace 256'
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # the lab's modules only where the guest runs them: the parser is
    from ..fixtures.iscsi import IscsiLab  # unit-tested on hosts without rtslib-fb

TRACING = Path("/sys/kernel/tracing")
EVENT = TRACING / "events/target/target_sequencer_start/enable"
# TP_printk of include/trace/events/target.h: "%s -> LUN %03u tag ... CDB %s  (TA:..."
# with the CDB as space-separated hex bytes.
COMMAND = re.compile(r" ([\d.]+): target_sequencer_start: (\S+) -> LUN (\d+) .*?"
                     r"CDB ((?:[0-9a-f]{2} ?)+)")


UEVENT = re.compile(r"^(KERNEL|UDEV) *\[([\d.]+)\] (\w+) +(\S+)", re.M)


class Command(NamedTuple):
    stamp: float
    initiator: str  # the IQN's last part: node1 or node2
    lun: int
    cdb: bytes

    @property
    def opcode(self) -> str:
        return f"{self.cdb[0]:02x}"

    @property
    def lba(self) -> int:
        """READ(10)'s LBA: the blocks read tell a blkid probe (its fixed offsets) apart."""
        return int.from_bytes(self.cdb[2:6], "big")


def commands(trace: str) -> list[Command]:
    return [Command(float(m[1]), m[2].rsplit(":", 1)[-1], int(m[3]), bytes.fromhex(m[4]))
            for m in COMMAND.finditer(trace)]


@contextlib.contextmanager
def monitoring(uevents: list[str]) -> Iterator[None]:
    """udevadm's monitor of block uevents, the kernel's and udevd's, over the window; its
    output (lines UEVENT parses) is appended to uevents at the end."""
    mon = subprocess.Popen(["udevadm", "monitor", "--kernel", "--udev", "-s", "block"],
                           stdout=subprocess.PIPE, text=True)
    try:
        yield
    finally:
        mon.terminate()
        uevents.append(mon.communicate()[0])


@contextlib.contextmanager
def tracing(uevents: list[str]) -> Iterator[None]:
    """LIO's tracepoint and udevadm's uevent monitor over the window, on one clock
    (CLOCK_MONOTONIC), so a probe's READs can be put after the uevent that caused them."""
    (TRACING / "trace_clock").write_text("mono")
    (TRACING / "trace").write_text("")
    with monitoring(uevents):
        EVENT.write_text("1")
        try:
            yield
        finally:
            EVENT.write_text("0")


def traced_off(lab: IscsiLab, n: int) -> tuple[list[int], str, float]:
    """bench_guest's counted run of fence_pr, traced over the window it counts."""
    from . import bench_guest as bg

    uevents: list[str] = []
    t0 = time.monotonic()
    r, wall, per = bg.counted_run(lab, "fence_pr", n, tracing(uevents))
    if r.returncode != 0:
        raise RuntimeError(f"fence_pr off: {r.stderr[-1000:]}")
    seen = UEVENT.findall("".join(uevents))
    kinds = Counter((src, action, Path(dev).name.rstrip("0123456789"))
                    for src, _, action, dev in seen)
    print(f"  unfence, then counted window, from {t0:.2f} (monotonic s); uevents in the window "
          f"(source, action, device kind): {dict(kinds)}")
    for src, ts, action, dev in seen[:12]:
        print(f"    {float(ts) - t0:+8.2f} s {src} {action} {dev}")
    return per, (TRACING / "trace").read_text(), wall


def main() -> int:
    from ..fixtures.iscsi import IscsiLab
    from ..fixtures.packaged import install
    from . import bench_guest as bg

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    lab = IscsiLab(luns=n, nodes=2, paths=2, size_mb=1)
    for node in (1, 2):
        lab.maps[node] = bg.make_maps(lab, node)
    print(f"udev drained in {bg.drain_udev(bg.SETUP_DRAIN_S):.2f} s", flush=True)
    subprocess.run(["dmsetup", "mknodes"], check=False)
    install(Path(bg.INSTALLED).parents[1])
    bg.unfence(lab.maps[1], "node1")
    if not EVENT.exists():
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACING)], check=True)
    (TRACING / "buffer_size_kb").write_text("65536")
    for i in range(rounds):
        per, trace, wall = traced_off(lab, n)
        odd = [lun for lun, c in enumerate(per) if c != 3]
        seen = commands(trace)
        ops = Counter((c.opcode, c.initiator) for c in seen)
        reads = [c for c in seen if c.lun in odd and c.opcode == "28"]
        print(f"round {i + 1}: {wall:.1f} s, mean {sum(per) / n:.2f} commands per LUN; "
              f"(opcode, initiator) counts {dict(ops)}", flush=True)
        print(f"  LUNs with a count other than 3: {[(lun, per[lun]) for lun in odd]}")
        for lun in odd[:2]:
            print(f"  LUN {lun} READ(10) LBAs: {[c.lba for c in reads if c.lun == lun]}",
                  flush=True)
        if reads:
            print(f"  those READs from {min(c.stamp for c in reads):.2f} to "
                  f"{max(c.stamp for c in reads):.2f} (monotonic s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
