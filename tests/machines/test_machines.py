"""The core machine-lab scenarios: a cluster of real machines starts and unfences itself,
fences a peer on request, and fences a node that lost power on its own (issue 15)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from tests.lab.machines.lab import MachineLab

Latency = Callable[[str, float], None]


def test_cluster_start_unfences_every_node(machine_lab: MachineLab, latency: Latency) -> None:
    lab = machine_lab
    latency("power_on_to_unfenced", lab.start_s)
    for name in lab.nodes:
        assert lab.has_keys(name) is True, lab.keys()
        ons = [e for e in lab.fence_history("node1", name)
               if e.action == "on" and e.status == "success"]
        assert ons, f"no successful unfencing of {name}: {lab.fence_history('node1')}"
        assert all(lab.writes(name).values()), f"{name} cannot write: {lab.writes(name)}"


def test_fence_from_peer(machine_lab: MachineLab, latency: Latency) -> None:
    """`stonith_admin --fence node2` on node1: node2's keys leave every path of every LUN
    and the namespace, node2's writes are refused, node1's are not; node2, power-cycled,
    rejoins and unfences itself."""
    lab = machine_lab
    t0 = time.monotonic()
    r = lab.nodes["node1"].run("stonith_admin --fence node2 --timeout 300", timeout=400)
    latency("stonith_admin_fence", time.monotonic() - t0)
    assert r.rc == 0, f"stonith_admin --fence node2: {r.rc} {r.err}\n{lab.diagnostics()}"
    assert lab.has_keys("node2") is False, lab.keys()
    assert lab.has_keys("node1") is True, lab.keys()
    assert not any(lab.writes("node2").values()), lab.writes("node2")
    assert all(lab.writes("node1").values()), lab.writes("node1")
    latency("rejoin_to_unfenced", lab.rejoin("node2"))


def test_power_loss(machine_lab: MachineLab, latency: Latency) -> None:
    """node2 loses power: node1 fences it on its own; node2 boots and unfences on rejoin."""
    lab = machine_lab
    lab.nodes["node2"].power_loss()
    t0 = time.monotonic()
    lab.wait_keys("node2", False, nominal=300)
    latency("power_loss_to_keys_gone", time.monotonic() - t0)
    offs = [e for e in lab.fence_history("node1", "node2")
            if e.action in ("off", "reboot") and e.status == "success"]
    assert offs, lab.fence_history("node1")
    assert all(lab.writes("node1").values()), lab.writes("node1")
    latency("rejoin_to_unfenced", lab.rejoin("node2"))


def test_partition_race(machine_lab: MachineLab, latency: Latency) -> None:
    """The cluster network cut between the two nodes: both fence at once, exactly one
    survives with every key, the other's writes are refused on every LUN and the namespace.
    FENCE_PR_MACHINE_RACES times (3 unless set; `make machines` runs 20), with the tally
    printed and written to lab-out/.  The loser is power-cycled and rejoins before the next
    race; after the last one the lab stops (rejoining is the other scenarios' claim, and
    under TCG it is three to five minutes)."""
    lab = machine_lab
    races = int(os.environ.get("FENCE_PR_MACHINE_RACES", "3"))
    tally: dict[str, int] = {}
    took = []
    for i in range(races):
        lab.set_links("c", list(lab.nodes), up=False)
        t0 = time.monotonic()
        outcome = lab.storage.wait(lambda: one_survivor(lab),
                                   f"race {i + 1}: one node registered everywhere and the "
                                   "other nowhere", 400)
        took.append(time.monotonic() - t0)
        winner = next(n for n, v in outcome.items() if v)
        loser = next(n for n, v in outcome.items() if v is False)
        tally[winner] = tally.get(winner, 0) + 1
        assert all(lab.writes(winner).values()), (i, winner, lab.writes(winner))
        assert not any(lab.writes(loser).values()), (i, loser, lab.writes(loser))
        offs = [e for e in lab.fence_history(winner, loser)
                if e.action in ("off", "reboot") and e.status == "success"]
        assert offs, (i, lab.fence_history(winner))
        print(f"race {i + 1}: {winner} survived", flush=True)
        if i + 1 < races:
            lab.nodes[loser].power_loss()
            lab.set_links("c", list(lab.nodes), up=True)
            lab.rejoin(loser)
    latency("cut_to_one_survivor_max", max(took))
    print(f"partition races on {lab.image}: {tally}")
    out = Path("lab-out")
    out.mkdir(exist_ok=True)
    (out / f"machines-partition-{lab.image}.json").write_text(
        json.dumps({"image": lab.image, "races": races, "survivors": tally}) + "\n")


def one_survivor(lab: MachineLab) -> dict[str, bool | None] | None:
    """The nodes' registrations once exactly one holds every key and the other none."""
    s = lab.survivors()
    return s if sorted(v is True for v in s.values()) == [False, True] and None not in \
        s.values() else None
