"""Storage faults at machine level during `off`, and what multipathd does to fence_pr's keys
and the reverse (issue 15, items 3 and 4).  Each scenario leaves the cluster as it found it:
both nodes online and registered on every path."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.lab.machines.lab import MachineLab
from tests.lab.machines.machine import Result

Latency = Callable[[str, float], None]
FAULT_S = 5.0  # how long a pulled cable or a stopped target stays out: the fault, not a wait


def fence_async(lab: MachineLab, by: str, target: str) -> Callable[[], Result | None]:
    """`stonith_admin --fence target` started on `by`; poll the returned callable."""
    base = lab.nodes[by].start(f"stonith_admin --fence {target} --timeout 300")
    return lambda: lab.nodes[by].result(base)


def wait_agent(lab: MachineLab, name: str) -> None:
    """fence_pr is running on `name`: its fencer has started the action."""
    m = lab.nodes[name]
    m.wait(lambda: m.run("pgrep -f /usr/sbin/fence_pr").rc == 0,
           f"fence_pr to run on {name}", 120, interval=0.2)


def all_paths_ready(lab: MachineLab, name: str) -> bool:
    """multipathd shows every path of every map active and its checker ready."""
    r = lab.nodes[name].run("multipathd show paths raw format '%m %t %T'", timeout=60)
    rows = [ln.split(maxsplit=2) for ln in r.out.splitlines() if ln.strip()]
    return len(rows) == 2 * lab.nluns and all(f[1:] == ["active", "ready"] for f in rows)


def agent_said(lab: MachineLab, name: str) -> str:
    """What pacemaker-fenced logged of fence_pr's own words on `name`."""
    return lab.nodes[name].run("journalctl -b -o cat -u pacemaker | grep -e 'fence_pr' "
                               "| tail -8").out


def test_off_with_a_path_lost_and_a_nic_flapping(machine_lab: MachineLab,
                                                 latency: Latency) -> None:
    """node1 has lost its second storage network; while it fences node2, its first one
    flaps.  node2 ends with no key on any path, and when node1's network is back multipathd
    brings its paths back with no help, still registered."""
    lab = machine_lab
    lab.set_links("s2", ["node1"], up=False)
    try:
        t0 = time.monotonic()
        done = fence_async(lab, "node1", "node2")
        wait_agent(lab, "node1")
        lab.set_links("s1", ["node1"], up=False)
        time.sleep(FAULT_S)
        lab.set_links("s1", ["node1"], up=True)
        r = lab.nodes["node1"].wait(done, "stonith_admin --fence node2 to return", 400)
        latency("fence_with_path_lost_and_flap", time.monotonic() - t0)
        assert r.rc == 0, f"{r.rc} {r.err}\n{agent_said(lab, 'node1')}"
        assert lab.has_keys("node2") is False, lab.keys()
    finally:
        lab.set_links("s2", ["node1"], up=True)
    t0 = time.monotonic()
    lab.nodes["node1"].wait(lambda: all_paths_ready(lab, "node1"),
                            "multipathd on node1 to show every path active and ready", 240)
    latency("paths_back_by_multipathd", time.monotonic() - t0)
    lab.wait_keys("node1", True)
    assert lab.nodes["node1"].wait(lambda: lab.nvme_head(lab.nodes["node1"])[1] == 2,
                                   "node1's NVMe head to have both paths again", 240)
    latency("rejoin_to_unfenced", lab.rejoin("node2"))


def test_storage_restarts_targets_during_off(machine_lab: MachineLab,
                                             latency: Latency) -> None:
    """The storage machine stops every portal and port while node1 fences node2, then
    starts them again.  fence_pr ends by itself (not at stonith_admin's timeout) with a
    clear result, and if that result was a failure the next attempt succeeds."""
    lab = machine_lab
    t0 = time.monotonic()
    done = fence_async(lab, "node1", "node2")
    wait_agent(lab, "node1")
    lab.storage_call("targets", "off")
    time.sleep(FAULT_S)
    lab.storage_call("targets", "on")
    r = lab.nodes["node1"].wait(done, "stonith_admin --fence node2 to return", 400)
    latency("fence_across_target_restart", time.monotonic() - t0)
    said = agent_said(lab, "node1")
    assert "Timer expired" not in r.err, f"fence_pr outlived its budget: {r.err}\n{said}"
    if r.rc != 0:
        assert said.strip(), "the failed attempt left no word from fence_pr in the log"
        r = lab.nodes["node1"].run("stonith_admin --fence node2 --timeout 300", timeout=400)
        assert r.rc == 0, f"the attempt after the restart failed: {r.err}\n{said}"
    assert lab.has_keys("node2") is False, lab.keys()
    lab.nodes["node1"].wait(lambda: all_paths_ready(lab, "node1"),
                            "multipathd on node1 to show every path active and ready", 240)
    lab.wait_keys("node1", True)
    latency("rejoin_to_unfenced", lab.rejoin("node2"))


def test_multipathd_registers_a_new_path_and_agrees_with_list(machine_lab: MachineLab) -> None:
    """A path that appears after `on` (node1's second portal logged out and in again: a new
    I_T nexus) is registered by multipathd with the key fence_pr handed it; no key appears
    twice on one nexus; `mpathpersist -i -k` reads the keys fence_pr's `list` reads."""
    lab = machine_lab
    m = lab.nodes["node1"]
    portal = "10.15.2.1:3260"
    m.run(f"iscsiadm -m node -p {portal} -u", check=True, timeout=120)
    m.run(f"iscsiadm -m node -p {portal} -l", check=True, timeout=120)
    m.wait(lambda: all_paths_ready(lab, "node1"), "node1's new path in every map", 240)

    def new_nexus_registered() -> bool:
        sids = m.run("iscsiadm -m session | sed 's/.*\\[\\([0-9]*\\)\\].*/\\1/'").out.split()
        isids = {f"0x00023d{int(s):06x}" for s in sids if s.isdigit()}
        regs = lab.storage_call("keys")["luns"]
        return all(isids <= {r["isid"] for r in v["registrations"]
                             if r["initiator"] == "iqn.2026-01.lab.fence-pr:machine-node1"}
                   for v in regs.values())

    lab.storage.wait(new_nexus_registered, "node1's new I_T nexus registered on every LUN",
                     240)
    regs = lab.storage_call("keys")["luns"]
    for lun, v in regs.items():
        nexuses = [(r["initiator"], r["isid"]) for r in v["registrations"]]
        assert len(nexuses) == len(set(nexuses)), f"{lun}: a nexus registered twice: {v}"
    for dev in lab.devices[:-1]:
        mp = m.run(f"mpathpersist -i -k -d {dev}", check=True).out
        # list prints `name,key`; list-status adds on/off: on is registered at the target.
        ours = m.run(f"fence_pr -o list-status --devices {dev}", check=True).out
        assert keys_in(mp), f"mpathpersist read no key on {dev}: {mp}"
        assert keys_in(mp) == keys_in(ours, registered_only=True), \
            f"{dev}: mpathpersist reads {mp!r}, fence_pr's list {ours!r}"


def keys_in(text: str, registered_only: bool = False) -> set[int]:
    """Keys in mpathpersist's (`0x...` words) or fence_pr list-status's (`name,key,on|off`)
    output."""
    keys = set()
    for line in text.splitlines():
        words = line.replace(",", " ").split()
        if registered_only and words[-1:] != ["on"]:
            continue
        keys |= {int(w, 0) for w in words if w.startswith("0x") or (
            registered_only and w.isdigit())}
    return keys
