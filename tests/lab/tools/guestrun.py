"""One lab boot for a tool: run a guest-side module, stream its output, and return the lines
it marked with a prefix as JSON (`BENCH {...}`, `PROFILE {...}`, `CLUSTER {...}`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..runner.kernels import KERNELS
from ..runner.vm import LabError, run


def results(cmd: str, kernel: str, prefix: str, timeout: float,
            tag: str) -> list[dict[str, Any]] | None:
    """The guest's `prefix` lines, or None once the failure has been said on stderr."""
    print(f"[{tag}] booting kernel {kernel}: {cmd}", flush=True)
    try:
        r = run(cmd, kernel=kernel, stream=True, timeout=timeout)
    except LabError as e:
        print(f"[{tag}] FAILED: {e}", file=sys.stderr)
        return None
    if r.rc != 0:
        sys.stderr.write(r.stderr[-5000:])
        print(f"[{tag}] guest exit {r.rc}; kernel log tail:\n"
              + "\n".join(r.dmesg.splitlines()[-40:]), file=sys.stderr)
        return None
    head = f"{prefix} "
    return [json.loads(line[len(head):]) for line in r.stdout.splitlines()
            if line.startswith(head)]


def parser(doc: str | None, luns: str, runs: int) -> argparse.ArgumentParser:
    """The options every such tool has: the kernel, the LUN counts, the runs of each."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--kernel", default="7.3", choices=KERNELS)
    ap.add_argument("--luns", default=luns)
    ap.add_argument("--runs", type=int, default=runs)
    return ap
