"""Path faults x actions, on dm over tcm_loop and over iSCSI: the fencer (node1) with all of
its paths down, a path flapping during the operation, its map suspended, and the target no
longer answering.  With a path left, the action succeeds; with none, it fails with exit 1,
names the device and the cause, and returns within power_timeout."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fence_pr.host.bounded import GRACE_S

from ..fixtures.agentrun import AGENT, CHECK, KEYS, NODE_KEYS, Node, Result
from ..fixtures.scenario import ACTIONS, BOUND_S, TIMEOUT_S, timed
from ..fixtures.topology import (
    check_paths,
    dm_message,
    dm_resume,
    dm_suspend,
    registered,
    sh,
)


# tcm_loop left out of CI (`make lab-slow`): the same engine paths, and CI's 50 min under load.
@pytest.fixture(params=["iscsi", pytest.param("tcm_loop", marks=pytest.mark.extra)])
def pair(request) -> Iterator[tuple[object, Node, Node]]:  # type: ignore[no-untyped-def]
    lab = request.getfixturevalue("clean_iscsi" if request.param == "iscsi" else "clean_lio")
    n1, n2 = Node("node1", lab.maps[1]), Node("node2", lab.maps[2])
    assert n1.run("on", "node1").rc == 0 and n2.run("on", "node2").rc == 0
    check_paths(lab.maps)
    yield lab, n1, n2


def test_all_of_the_fencers_paths_down(clean_lio) -> None:  # type: ignore[no-untyped-def]
    """sd state offline on every path of node1 (tcm_loop; over iSCSI the transport class
    brings a session's devices back: there, see the next test and
    test_target_stops_answering)."""
    lab = clean_lio
    n1, n2 = Node("node1", lab.maps[1]), Node("node2", lab.maps[2])
    assert n1.run("on", "node1").rc == 0 and n2.run("on", "node2").rc == 0
    down = [p for lun in lab.luns for (node, _), p in lun.paths.items() if node == 1]
    for p in down:
        p.set_state("offline")
    try:
        for action, target in ACTIONS:
            r, took = timed(n1, action, target)
            assert r.rc == 1, (action, r)
            assert "offline" in r.err or "not reachable" in r.err, (action, r)
            assert any(m in r.err for m in n1.devices), (action, r)
            assert "Traceback" not in r.err and took < BOUND_S, (action, took, r)
    finally:
        for p in down:
            p.set_state("running")
    assert registered(lab.luns, KEYS["node2"]) == [2] * len(lab.luns), "nothing was fenced"


@pytest.mark.extra  # `make lab-slow`; CI keeps test_all_of_the_fencers_paths_down
def test_all_of_the_fencers_iscsi_sessions_gone(clean_iscsi) -> None:  # type: ignore[no-untyped-def]
    """Over iSCSI, all paths down is node1 logged out of both portals: its maps keep paths
    whose sd devices are gone.  The fixture logs back in and reloads the maps."""
    lab = clean_iscsi
    n1, n2 = Node("node1", lab.maps[1]), Node("node2", lab.maps[2])
    assert n1.run("on", "node1").rc == 0 and n2.run("on", "node2").rc == 0
    for path in range(lab.npaths):
        lab.logout(1, path)
    for action, target in ACTIONS:
        r, took = timed(n1, action, target)
        assert r.rc == 1 and "Traceback" not in r.err and "internal error" not in r.err, \
            (action, r)
        assert any(m in r.err for m in n1.devices), (action, r)
        assert took < BOUND_S, (action, took, r)
    assert registered(lab.luns, KEYS["node2"]) == [2] * len(lab.luns), "nothing was fenced"


def test_a_path_flapping_during_on_and_off(pair) -> None:  # type: ignore[no-untyped-def]
    lab, n1, _ = pair
    flapping = [lun.paths[(1, 0)] for lun in lab.luns]
    stop = threading.Event()

    def flap() -> None:
        state = "offline"
        while not stop.is_set():
            for p in flapping:
                p.set_state(state)
            state = "running" if state == "offline" else "offline"
            stop.wait(0.3)
        for p in flapping:
            p.set_state("running")

    t = threading.Thread(target=flap)
    t.start()
    try:
        r_on, _ = timed(n1, "on", "node1")
        r_off, _ = timed(n1, "off", "node2")
    finally:
        stop.set()
        t.join()
    assert r_on.rc == 0, r_on
    assert r_off.rc == 0, r_off
    assert registered(lab.luns, KEYS["node2"]) == [0] * len(lab.luns)
    assert all(c >= 1 for c in registered(lab.luns, KEYS["node1"]))
    check_paths(lab.maps)
    r = n1.run("on", "node1")  # a path missed while it was down is repaired
    assert r.rc == 0, r
    assert registered(lab.luns, KEYS["node1"]) == [2] * len(lab.luns)


def test_the_fencers_map_suspended(pair) -> None:  # type: ignore[no-untyped-def]
    """fence_pr sends PR commands to the path devices, not through the map: a suspended
    map (EAGAIN for pr.h through dm) does not stop it."""
    lab, n1, _ = pair
    for m in n1.devices:
        dm_suspend(m)
    try:
        results = {a: timed(n1, a, t) for a, t in ACTIONS}
    finally:
        for m in n1.devices:
            dm_resume(m)
    for action, (r, took) in results.items():
        want = 2 if action == "status" else 0
        assert r.rc == want, (action, r)
        assert took < BOUND_S, (action, took)
    assert registered(lab.luns, KEYS["node2"]) == [0] * len(lab.luns)


def _sessions_logged_in() -> bool:
    return all(s.read_text().strip() == "LOGGED_IN"
               for s in Path("/sys/class/iscsi_session").glob("session*/state"))


def _target_back(lab, within_s: float) -> None:  # type: ignore[no-untyped-def]
    """Enable the portal group again and wait for every session to log back in."""
    lab.tpg.enable = True
    deadline = time.monotonic() + within_s
    while not _sessions_logged_in():
        assert time.monotonic() < deadline, "iSCSI sessions did not recover"
        time.sleep(1)


def watchdog_check(node: Node, conf_dir: Path) -> tuple[Result, float]:
    """fence_pr_check test, as the watchdog daemon runs it, with power_timeout TIMEOUT_S."""
    conf = conf_dir / f"check.{node.name}"
    conf.write_text(f"devices={','.join(node.devices)}\nnode_keys={NODE_KEYS}\n"
                    f"local_node={node.name}\npower_timeout={TIMEOUT_S}\n")
    t = time.monotonic()
    r = subprocess.run([CHECK, "test"],
                       capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, FENCE_PR_CHECK_CONF=str(conf)))
    return Result(r.returncode, r.stdout, r.stderr), time.monotonic() - t


def test_target_stops_answering(clean_iscsi, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The iSCSI target's portal group is disabled: every session goes into recovery and
    commands queue at the initiator, and node1's maps queue I/O with no path
    (queue_if_no_path, as multipathd's `no_path_retry queue` sets).  Each action must give
    up at its deadline: fence_pr sends nothing through a map, so dm's queueing (and its
    CLEAR loop on ENOTCONN) cannot hold it."""
    lab = clean_iscsi
    n1, n2 = Node("node1", lab.maps[1]), Node("node2", lab.maps[2])
    assert n1.run("on", "node1").rc == 0 and n2.run("on", "node2").rc == 0
    for m in n1.devices:
        dm_message(m, "queue_if_no_path")
        assert "queue_if_no_path" in sh("dmsetup", "table", Path(m).name), m
    lab.tpg.enable = False
    try:
        # The watchdog's test hook has the agent's bound: a read stuck in iSCSI recovery
        # must not hang the watchdog daemon (fence_pr_check once bounded it with threads).
        r, took = watchdog_check(n1, tmp_path)
        assert r.rc == 1 and "Traceback" not in r.err, r
        assert took < BOUND_S, (took, r)
        for action, target in ACTIONS:
            r, took = timed(n1, action, target)
            assert r.rc == 1 and "Traceback" not in r.err, (action, r)
            # A worker left stuck in the kernel still holds the node lock: a later on/off
            # says so, and names the worker's state and the path devices it has open.
            if "another fence_pr" in r.err:
                assert "stuck in the kernel" in r.err, (action, r)
                assert any(p.dev in r.err for lun in lab.luns
                           for (node, _), p in lun.paths.items() if node == 1), (action, r)
            else:
                assert any(m in r.err for m in n1.devices), (action, r)
            assert took < BOUND_S, (action, took, r)
    finally:
        for m in n1.devices:  # release anything queued; back to the lab's default
            dm_message(m, "fail_if_no_path")
        _target_back(lab, within_s=120)


HANG = "#!/bin/sh\nexec sleep 600\n"


@pytest.mark.extra  # `make lab-slow`: the hanging tools are fakes; the budget is the agent's
def test_discovery_that_hangs_ends_within_the_budget(clean_lio, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """power_timeout is the whole budget: corosync-cmapctl and dmsetup, looked up before any
    device is touched, spend from it like the PR commands (they had 10 s and 30 s of their
    own, outside it).  The bound: the budget, the bound's grace (bounded.GRACE_S) and what
    this guest takes right now to start the agent and fail at once."""
    lab = clean_lio
    n1 = Node("node1", lab.maps[1])
    for tool in ("corosync-cmapctl", "dmsetup"):
        (tmp_path / tool).write_text(HANG)
        (tmp_path / tool).chmod(0o755)
    devices = ",".join(n1.devices)

    def off(*extra: str, path: str | None = None) -> tuple[Result, float]:
        env = dict(os.environ, PATH=f"{path}:{os.environ['PATH']}") if path else None
        t = time.monotonic()
        r = subprocess.run([AGENT, "-o", "off", "-n", "node2", "--devices", devices,
                            "--power-timeout", str(TIMEOUT_S), *extra], capture_output=True,
                           text=True, timeout=300, env=env)
        return Result(r.returncode, r.stdout, r.stderr), time.monotonic() - t

    r, start_s = off("--corosync-cmap-path", str(tmp_path / "absent"))
    assert r.rc == 1 and "cannot run" in r.err, r
    bound = TIMEOUT_S + GRACE_S + start_s
    r, took = off("--corosync-cmap-path", str(tmp_path / "corosync-cmapctl"))
    assert r.rc == 1 and "corosync-cmapctl did not answer" in r.err, r
    assert took < bound, (took, bound, r)
    r, took = off("--node_keys", NODE_KEYS, "--local_node", "node1", path=str(tmp_path))
    assert r.rc == 1 and "dmsetup status did not answer" in r.err, r
    assert took < bound, (took, bound, r)


def _lock_holder() -> int | None:
    """The pid holding fence_pr's node lock, from /proc/locks (not from fence_pr's code)."""
    ino = os.stat("/run/fence_pr/lock").st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        f = line.split()
        if len(f) >= 6 and f[1] == "FLOCK" and f[5].endswith(f":{ino}"):
            return int(f[4])
    return None


def _states(pid: int) -> list[str]:
    out = []
    for t in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, IndexError):
            out.append(t.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0])
    return out


def test_a_worker_stuck_in_the_kernel_is_named(clean_iscsi) -> None:  # type: ignore[no-untyped-def]
    """An `on` whose command sleeps in iSCSI recovery keeps the node lock in its worker;
    the next `off` waits half its budget, then names that worker, its state and the path
    devices it has open, so the admin knows which device to look at."""
    lab = clean_iscsi
    n1, n2 = Node("node1", lab.maps[1]), Node("node2", lab.maps[2])
    assert n1.run("on", "node1").rc == 0 and n2.run("on", "node2").rc == 0
    lab.tpg.enable = False
    slow = subprocess.Popen(
        [AGENT, "-o", "on", "-n", "node1", "--devices", ",".join(n1.devices),
         "--node_keys", NODE_KEYS, "--local_node", "node1", "--power-timeout", "100"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, holder, states = time.monotonic() + 60, None, []
        while time.monotonic() < deadline:
            holder = _lock_holder()
            states = _states(holder) if holder else []
            if "D" in states:
                break
            time.sleep(0.5)
        assert holder and "D" in states, f"on's worker never slept in the kernel: {states}"
        r, took = timed(n1, "off", "node2")
        assert r.rc == 1 and "Traceback" not in r.err, r
        assert f"another fence_pr on this node (process {holder}, stuck in the kernel" \
            in r.err, r
        mine = [p.dev for lun in lab.luns for (node, _), p in lun.paths.items() if node == 1]
        assert any(d in r.err for d in mine), (mine, r)
        assert took < BOUND_S, (took, r)
    finally:
        _target_back(lab, within_s=180)
        slow.wait(timeout=180)
    assert registered(lab.luns, KEYS["node2"]) == [2] * len(lab.luns), \
        "the refused off changed keys"
