"""`make demo`: boot the lab; a two-node Pacemaker cluster fences node2 through fence_pr."""

from __future__ import annotations

import sys

from ..runner.vm import LabError, run


def main() -> int:
    print("[demo] booting the lab kernel (Debian 7.3, QEMU software emulation)...", flush=True)
    try:
        r = run(".venv/bin/python -m tests.lab.tools.demo_guest", stream=True)
    except LabError as e:
        print(f"[demo] FAILED: {e}", file=sys.stderr)
        return 1
    if r.rc:
        sys.stderr.write(r.stderr[-3000:])
    print(f"[demo] guest ready in {r.ready_s}s; whole demo {r.wall_s:.1f}s", flush=True)
    return r.rc


if __name__ == "__main__":
    sys.exit(main())
