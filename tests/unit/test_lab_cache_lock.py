"""Two `make setup` runs on one machine take the lab cache in turn (tests/lab/runner/kernels.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.runner import kernels

CHILD = "from tests.lab.runner.kernels import cache_lock; cache_lock(); print('held', flush=True)"


def test_a_second_setup_waits_for_the_first(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "CACHE", tmp_path)
    fd = kernels.cache_lock()
    child = subprocess.Popen([sys.executable, "-c", CHILD], text=True,
                             env=dict(os.environ, FENCE_PR_LAB_CACHE=str(tmp_path)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert child.stderr is not None
        # The child says it waits before it blocks: no sleep decides this test.
        assert "waiting" in child.stderr.readline()
        assert child.poll() is None, "the second setup went on while the first held the cache"
    finally:
        os.close(fd)
    out, _ = child.communicate(timeout=60)
    assert out.strip() == "held"
    assert (tmp_path / ".lock").stat().st_mode & 0o077 == 0


def test_a_planted_symlink_is_not_followed(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "CACHE", tmp_path)
    target = tmp_path / "elsewhere"
    (tmp_path / ".lock").symlink_to(target)
    with pytest.raises(OSError):
        kernels.cache_lock()
    assert not target.exists()
