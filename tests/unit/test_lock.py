"""The node lock: a second holder waits, then gives up with a message; a dead holder frees it;
no other user can hold it."""

from __future__ import annotations

import grp
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fence_pr.host.lock import LOCK_NAME, LockError, LockTimeout, node_lock

NOBODY = 65534

HOLD = """
import sys, time
from fence_pr.host.lock import node_lock
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


def test_the_directory_is_made_for_root_and_haclient_alone(tmp_path: Path) -> None:
    lock_dir = tmp_path / "fence_pr"
    with node_lock(0.5, str(lock_dir)):
        pass
    st, lf = lock_dir.stat(), (lock_dir / LOCK_NAME).stat()
    assert stat.S_IMODE(st.st_mode) == 0o750 and st.st_uid == os.geteuid()
    assert stat.S_IMODE(lf.st_mode) == 0o640 and stat.S_ISREG(lf.st_mode)
    if os.geteuid() == 0:
        assert st.st_gid == lf.st_gid == grp.getgrnam("haclient").gr_gid


def test_no_fallback_where_the_directory_cannot_be_made(tmp_path: Path) -> None:
    """The old agent fell back to /tmp, a sticky world-writable directory."""
    with pytest.raises(LockError, match="cannot open the lock directory"), \
            node_lock(0.5, str(tmp_path / "no-such-dir" / "fence_pr")):
        pass


def test_a_directory_another_user_owns_is_refused(tmp_path: Path) -> None:
    lock_dir = tmp_path / "fence_pr"
    lock_dir.mkdir(mode=0o755)
    os.chown(lock_dir, NOBODY, NOBODY)
    with pytest.raises(LockError, match="belongs to uid 65534"), node_lock(0.5, str(lock_dir)):
        pass
    assert not (lock_dir / LOCK_NAME).exists()


def test_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    lock_dir = tmp_path / "fence_pr"
    lock_dir.mkdir()
    lock_dir.chmod(0o1777)
    with pytest.raises(LockError, match="writable by others"), node_lock(0.5, str(lock_dir)):
        pass


def test_a_lock_file_another_user_owns_is_refused(tmp_path: Path) -> None:
    """It could have been made (and be held) by that user."""
    lock_dir = tmp_path / "fence_pr"
    lock_dir.mkdir(mode=0o750)
    (lock_dir / LOCK_NAME).touch()
    os.chown(lock_dir / LOCK_NAME, NOBODY, NOBODY)
    with pytest.raises(LockError, match="belongs to uid 65534"), node_lock(0.5, str(lock_dir)):
        pass


def test_a_symbolic_link_is_not_followed(tmp_path: Path) -> None:
    lock_dir = tmp_path / "fence_pr"
    lock_dir.mkdir(mode=0o750)
    target = tmp_path / "elsewhere"
    target.touch()
    (lock_dir / LOCK_NAME).symlink_to(target)
    with pytest.raises(LockError, match="symbolic link"), node_lock(0.5, str(lock_dir)):
        pass
    link_dir = tmp_path / "link"
    link_dir.symlink_to(lock_dir)
    with pytest.raises(LockError, match="cannot open the lock directory"), \
            node_lock(0.5, str(link_dir)):
        pass


def test_the_message_names_the_holder_and_its_state(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The holder's pid and state from /proc: a worker stuck in the kernel (D) is told apart
    from one still working.  (Naming the devices it has open is checked in the lab, on a
    worker really stuck: tests/lab/faults/test_fault_matrix.py.)"""
    path = str(tmp_path / "lock")
    p = holder(path, 30)
    try:
        with pytest.raises(LockTimeout) as e, node_lock(0.1, path):
            pass
        assert f"(process {p.pid}, waiting)" in str(e.value)
    finally:
        p.kill()
        p.wait()
