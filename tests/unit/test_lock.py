"""The node lock: a second holder waits, then gives up with a message; a dead holder frees it."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from fence_pr.lock import LockTimeout, node_lock

HOLD = """
import sys, time
from fence_pr.lock import node_lock
with node_lock(5, sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def holder(path: str, seconds: float) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", HOLD, path, str(seconds)], text=True,
                         stdout=subprocess.PIPE)
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def test_second_run_gives_up_after_its_wait(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "lock")
    p = holder(path, 30)
    try:
        t = time.monotonic()
        with pytest.raises(LockTimeout, match="another fence_pr"), node_lock(0.3, path):
            pass
        assert 0.3 <= time.monotonic() - t < 2
    finally:
        p.kill()
        p.wait()


def test_second_run_proceeds_when_the_first_ends(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "lock")
    p = holder(path, 0.5)
    with node_lock(10, path):
        assert p.wait(timeout=5) == 0


def test_a_killed_holder_leaves_no_stale_lock(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "lock")
    p = holder(path, 30)
    p.kill()
    p.wait()
    with node_lock(0.5, path):
        pass


def test_missing_lock_directory_falls_back(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with node_lock(0.5, str(tmp_path / "no-such-dir" / "lock")):
        pass


def test_the_message_names_the_holder_and_its_state(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The holder's pid and state from /proc: a worker stuck in the kernel (D) is told apart
    from one still working.  (Naming the devices it has open is checked in the lab, on a
    worker really stuck: tests/lab/test_fault_matrix.py.)"""
    path = str(tmp_path / "lock")
    p = holder(path, 30)
    try:
        with pytest.raises(LockTimeout) as e, node_lock(0.1, path):
            pass
        assert f"(process {p.pid}, waiting)" in str(e.value)
    finally:
        p.kill()
        p.wait()
