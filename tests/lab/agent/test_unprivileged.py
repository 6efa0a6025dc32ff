"""fence_pr without root: no capabilities at all, only group write access to the device nodes
(what packaging/'s udev rule grants).  On 7.3 every action works through pr.h alone; on
6.12 reading keys needs PR IN over SG_IO, and if the kernel refuses it the error must say
that privilege is what is missing."""

from __future__ import annotations

import grp
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import fence_pr

from ..fixtures.agentrun import KEYS, NODE_KEYS, Node, Result
from ..fixtures.scenario import kernel_at_least
from ..fixtures.topology import check_paths, group_access, registered

GROUP = "haclient"  # Pacemaker's group; packaging/udev/60-fence_pr.rules uses it too
PR_H_READS = kernel_at_least(6, 19)  # IOC_PR_READ_KEYS / READ_RESERVATION


@pytest.fixture
def unprivileged(clean_lio) -> Iterator[tuple[object, str]]:  # type: ignore[no-untyped-def]
    """A world-readable copy of the package (the checkout may be root-only) and node1's
    devices -- its maps and their sd paths -- group-writable by GROUP."""
    root = tempfile.mkdtemp()
    shutil.copytree(Path(fence_pr.__file__).parent, Path(root) / "fence_pr",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for d, _, files in os.walk(root):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    nodes = clean_lio.maps[1] + [lun.paths[(1, p)].dev for lun in clean_lio.luns for p in (0, 1)]
    try:
        with group_access(nodes, GROUP):
            yield clean_lio, root
    finally:
        shutil.rmtree(root)


def as_nobody(root: str, *args: str) -> Result:
    gid = grp.getgrnam(GROUP).gr_gid
    r = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", f"--groups={gid}", "--inh-caps=-all",
         "--bounding-set=-all", "--no-new-privs", "env", f"PYTHONPATH={root}",
         "/usr/bin/python3", "-c", "from fence_pr.agent import main; main()", *args],
        capture_output=True, text=True, timeout=120)
    return Result(r.returncode, r.stdout, r.stderr)


def test_on_off_status_monitor_without_privilege(unprivileged) -> None:  # type: ignore[no-untyped-def]
    lab, root = unprivileged
    n1, n2 = Node("node1", lab.maps[1]), Node("node2", lab.maps[2])
    base = ["--devices", ",".join(n1.devices), "--node_keys", NODE_KEYS, "--local_node", "node1"]
    assert n2.run("on", "node2").rc == 0  # node2 is root, as usual
    r = as_nobody(root, "-o", "on", "-n", "node1", *base)
    if not PR_H_READS:
        # Registering works; verifying it needs PR IN over SG_IO.
        assert r.rc == 0 or ("privilege" in r.err.lower() and "Traceback" not in r.err), r
        if r.rc:
            return
    assert r.rc == 0, r
    assert registered(lab.luns, KEYS["node1"]) == [2] * len(lab.luns)
    check_paths(lab.maps)
    r = as_nobody(root, "-o", "monitor", *base)
    assert r.rc == 0, r
    r = as_nobody(root, "-o", "off", "-n", "node2", *base)
    assert r.rc == 0, r
    assert registered(lab.luns, KEYS["node2"]) == [0] * len(lab.luns)
    r = as_nobody(root, "-o", "status", "-n", "node2", *base)
    assert r.rc == 2 and "OFF" in r.out, r
    r = as_nobody(root, "-o", "status", "-n", "node1", *base)
    assert r.rc == 0 and "ON" in r.out, r


# A local user outside haclient, against the node lock: it holds the lock file of older
# fence_pr releases (/run/lock, a world-writable directory) and tries every way it has at
# the new one.  Each line it prints says what it got.
LOCK_THIEF = """
import fcntl, os, sys, time
try:
    fd = os.open("/run/lock/fence_pr.host.lock", os.O_RDONLY | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("old lock: held", flush=True)
except OSError as e:
    print(f"old lock: {e.strerror}", flush=True)
for what, attempt in (
        ("open", lambda: os.open("/run/fence_pr/lock", os.O_RDONLY)),
        ("create", lambda: os.open("/run/fence_pr/lock2", os.O_RDONLY | os.O_CREAT)),
        ("mkdir", lambda: os.mkdir("/run/fence_pr/x")),
        ("rename", lambda: os.rename("/run/fence_pr", "/run/fence_pr.old"))):
    try:
        got = attempt()
        if isinstance(got, int):
            fcntl.flock(got, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print(f"new lock {what}: GOT IT", flush=True)
    except OSError as e:
        print(f"new lock {what}: {e.strerror}", flush=True)
print("ready", flush=True)
time.sleep(600)
"""


@pytest.mark.once  # the lock file's ownership checks do not depend on the kernel
def test_another_user_cannot_hold_the_node_lock(clean_lio) -> None:  # type: ignore[no-untyped-def]
    """`off` runs at its normal pace while the user holds what it can.  Before the lock
    moved, holding /run/lock/fence_pr.host.lock made every `on` and `off` of the node wait half
    its budget and fail."""
    lab = clean_lio
    n1, n2 = Node("node1", lab.maps[1]), Node("node2", lab.maps[2])
    assert n1.run("on", "node1").rc == 0 and n2.run("on", "node2").rc == 0
    old = Path("/run/lock/fence_pr.host.lock")  # as an older release left it (root, 0644)
    old.touch(mode=0o644)
    thief = subprocess.Popen(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
         "--bounding-set=-all", "--no-new-privs", "/usr/bin/python3", "-c", LOCK_THIEF],
        stdout=subprocess.PIPE, text=True)
    try:
        assert thief.stdout is not None
        said: list[str] = []
        while (line := thief.stdout.readline().strip()) != "ready":
            assert line, f"the lock thief exited: {said}"
            said.append(line)
        assert "old lock: held" in said, said
        assert not [s for s in said if "GOT IT" in s], said
        budget = 60.0
        t0 = time.monotonic()
        r = n1.run("off", "node2", "--power-timeout", f"{budget:.0f}")
        took = time.monotonic() - t0
    finally:
        thief.kill()
        thief.wait()
        old.unlink(missing_ok=True)
    assert r.rc == 0, r
    # A held lock costs half the budget (actions.LOCK_WAIT_SHARE) before `off` gives up.
    assert took < budget / 2, f"off took {took:.1f}s of its {budget:.0f}s budget: {r}"
    assert registered(lab.luns, KEYS["node2"]) == [0] * len(lab.luns)
    st = os.stat("/run/fence_pr")
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o750), oct(st.st_mode)
