"""Boot the lab once and run every lab test inside it (host side of `make lab`)."""

from __future__ import annotations

import argparse
import os
import sys

from .kernels import KERNELS
from .vm import LabError, run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kernel", default="7.3", choices=KERNELS)
    ap.add_argument("--timeout", type=float, default=3600,
                    help="give up on the guest after this many seconds")
    ap.add_argument("--skip-once", action="store_true",
                    help="leave out the tests marked `once` (run on another kernel already)")
    ap.add_argument("--extra", action="store_true",
                    help="also run the tests marked `extra` (left out of `make lab`, so of CI)")
    ap.add_argument("pytest_args", nargs="*", default=[])
    a, rest = ap.parse_known_args()
    a.pytest_args += rest
    args = " ".join(a.pytest_args) or "tests/lab"
    marks = "lab" + (" and not once" if a.skip_once else "") + ("" if a.extra else " and not extra")
    marks = f"'{marks}'"
    cmd = (f".venv/bin/python -m pytest -p no:cacheprovider -m {marks} -v --tb=short "
           f"--durations=30 -o console_output_style=classic "
           # Where a test stands when it has run 10 min (no lab test takes half that under
           # load): every thread's stack, so a hang is named before the guest limit kills it.
           f"-o faulthandler_timeout=600 {args}")
    print(f"[lab] booting kernel {a.kernel}: {cmd}", flush=True)
    try:
        # FENCE_PR_* (e.g. make reliability's sample sizes) reach the guest's tests.
        env = {k: v for k, v in os.environ.items() if k.startswith("FENCE_PR_")}
        env.update(LAB_KERNEL=a.kernel, CI=os.environ.get("CI", ""))
        r = run(cmd, kernel=a.kernel, stream=True, timeout=a.timeout, env=env)
    except LabError as e:
        print(f"[lab] FAILED: {e}", file=sys.stderr)
        return 1
    sys.stderr.write(r.stderr[-5000:])
    print(f"[lab] kernel {a.kernel}: guest ready {r.ready_s}s after boot, "
          f"whole run {r.wall_s:.1f}s, pytest exit {r.rc}", flush=True)
    if r.rc != 0:
        print("[lab] guest kernel log tail:\n" + "\n".join(r.dmesg.splitlines()[-40:]))
    return r.rc


if __name__ == "__main__":
    sys.exit(main())
