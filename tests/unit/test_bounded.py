"""run_bounded: the child's output and exit code come through; at the deadline the parent
leaves, and whoever waits for it (pacemaker-fenced reading its pipes) is not held up."""

from __future__ import annotations

import subprocess
import sys
import time

SCRIPT = """
import sys, time
from fence_pr.host.bounded import run_bounded
from fence_pr.host.budget import Deadline
def work():
    print("to stdout", flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    {body}
sys.exit(run_bounded(work, Deadline({seconds}), "/dev/test"))
"""


def run(body: str, seconds: float = 5) -> tuple[subprocess.CompletedProcess[str], float]:
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-c", SCRIPT.format(body=body, seconds=seconds)],
                       capture_output=True, text=True, timeout=60)
    return r, time.monotonic() - t


def test_output_and_exit_code_pass_through() -> None:
    r, _ = run("return 2")
    assert (r.returncode, r.stdout, r.stderr) == (2, "to stdout\n", "to stderr\n")


def test_sys_exit_in_the_child() -> None:
    r, _ = run("sys.exit(0)")
    assert r.returncode == 0 and r.stdout == "to stdout\n"


def test_an_exception_is_exit_1_without_a_traceback_on_stdout() -> None:
    r, _ = run("raise RuntimeError('boom')")
    assert r.returncode == 1 and "boom" in r.stderr and "Traceback" not in r.stderr


def test_a_stuck_child_is_left_behind_at_the_deadline() -> None:
    r, took = run("time.sleep(30)", seconds=1)
    assert r.returncode == 1, r
    assert "no answer within 1 s" in r.stderr and "/dev/test" in r.stderr, r.stderr
    assert took < 10, took  # the caller saw EOF on both pipes long before the child ended
