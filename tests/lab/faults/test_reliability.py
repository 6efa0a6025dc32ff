"""Split brain, concurrent runs on one node, and self-protection, checked at the target.

`make reliability` runs the split-brain race FENCE_PR_RACES times (200) and prints the
tally; CI runs a smaller sample.  Keys are read with sg_persist, not with fence_pr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from ..fixtures.agentrun import AGENT, KEYS, NODE_KEYS, Node
from ..fixtures.topology import check_paths, registered, scsi_generation, scsi_keys

RACES = int(os.environ.get("FENCE_PR_RACES", "3"))
OUT = Path(__file__).resolve().parents[3] / "lab-out"


@pytest.fixture
def pair(clean_lio):  # type: ignore[no-untyped-def]
    n1, n2 = Node("node1", clean_lio.maps[1]), Node("node2", clean_lio.maps[2])
    return clean_lio, n1, n2


def snapshot(lab) -> list[tuple[int, list[int]]]:  # type: ignore[no-untyped-def]
    return [(scsi_generation(lun.paths[(2, 1)].dev), sorted(scsi_keys(lun.paths[(2, 1)].dev)))
            for lun in lab.luns]


def start(node: Node, action: str, target: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [AGENT, "-o", action, "-n", target, "--devices", ",".join(node.devices),
         "--node_keys", NODE_KEYS, "--local_node", node.name],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def outcome(lab) -> str:  # type: ignore[no-untyped-def]
    """Who is registered on which LUN, in one word."""
    k1, k2 = registered(lab.luns, KEYS["node1"]), registered(lab.luns, KEYS["node2"])
    full, none = [2] * len(lab.luns), [0] * len(lab.luns)
    if k1 == full and k2 == none:
        return "node1 survived"
    if k2 == full and k1 == none:
        return "node2 survived"
    if k1 == none and k2 == none:
        return "both fenced"
    if k1 == full and k2 == full:
        return "both alive"
    return f"split: node1 {k1}, node2 {k2}"


def test_split_brain_exactly_one_survivor(pair) -> None:  # type: ignore[no-untyped-def]
    """Both nodes fence each other at the same instant over 3 LUNs; the arbiter (first LUN
    by WWID) decides, so one node keeps every LUN and the other loses every LUN."""
    lab, n1, n2 = pair
    tally: Counter[str] = Counter()
    bad = []
    for i in range(RACES):
        for n in (n1, n2):
            r = n.run("on", n.name)
            assert r.rc == 0, f"race {i}: {r}"
        check_paths(lab.maps)
        procs = {n.name: start(n, "off", other.name) for n, other in ((n1, n2), (n2, n1))}
        rcs = {name: p.wait(timeout=120) for name, p in procs.items()}
        check_paths(lab.maps)
        what = outcome(lab)
        tally[what] += 1
        winner = what.split()[0] if what.endswith("survived") else None
        if winner is None or rcs[winner] != 0 or sorted(rcs.values()) != [0, 1]:
            bad.append((i, what, rcs, {n: p.stderr.read() if p.stderr else ""
                                       for n, p in procs.items()}))
    OUT.mkdir(exist_ok=True)
    (OUT / f"split-brain-{os.environ.get('LAB_KERNEL', '')}.json").write_text(
        json.dumps({"races": RACES, "tally": tally}, indent=1))
    print(f"split brain, {RACES} races over {len(lab.luns)} LUNs: {dict(tally)}",
          file=sys.stderr)
    assert not bad, f"tally {dict(tally)}; bad races: {bad[:3]}"


@pytest.mark.extra  # `make lab-slow`: the node lock is the agent's, the same on every kernel
def test_two_runs_at_once_on_one_node(pair) -> None:  # type: ignore[no-untyped-def]
    """Pacemaker retries while a slow run still works: the second waits for the node lock,
    then finds the work done; nothing is lost either way."""
    lab, n1, n2 = pair
    assert n1.run("on", "node1").rc == 0 and n2.run("on", "node2").rc == 0
    check_paths(lab.maps)
    ons = [start(n1, "on", "node1") for _ in range(2)]
    assert [p.wait(timeout=120) for p in ons] == [0, 0]
    assert registered(lab.luns, n1.key) == [2] * len(lab.luns)
    check_paths(lab.maps)
    offs = [start(n1, "off", "node2") for _ in range(2)]
    rcs = [p.wait(timeout=120) for p in offs]
    assert rcs == [0, 0], [p.stderr.read() for p in offs if p.stderr]
    assert registered(lab.luns, n2.key) == [0] * len(lab.luns)
    assert registered(lab.luns, n1.key) == [2] * len(lab.luns)


def test_fenced_node_cannot_fence_the_survivor(pair) -> None:  # type: ignore[no-untyped-def]
    lab, n1, n2 = pair
    assert n1.run("on", "node1").rc == 0 and n2.run("on", "node2").rc == 0
    check_paths(lab.maps)
    assert n1.run("off", "node2").rc == 0
    check_paths(lab.maps)
    before = snapshot(lab)
    r = n2.run("off", "node1")
    assert r.rc == 1 and "not registered" in r.err and "Traceback" not in r.err, r
    assert snapshot(lab) == before, "a refused fence changed nothing at the target"


def test_on_of_a_registered_node_drops_no_key(pair) -> None:  # type: ignore[no-untyped-def]
    lab, n1, n2 = pair
    assert n1.run("on", "node1").rc == 0 and n2.run("on", "node2").rc == 0
    check_paths(lab.maps)
    keys_before = [keys for _, keys in snapshot(lab)]
    holder = subprocess.run(["sg_persist", "-n", "--in", "--read-reservation",
                             lab.luns[0].paths[(2, 1)].dev], capture_output=True, text=True)
    assert n1.run("on", "node1").rc == 0
    assert [keys for _, keys in snapshot(lab)] == keys_before
    again = subprocess.run(["sg_persist", "-n", "--in", "--read-reservation",
                            lab.luns[0].paths[(2, 1)].dev], capture_output=True, text=True)
    assert "Key=" in again.stdout and again.stdout.split("Key=")[1] == \
        holder.stdout.split("Key=")[1], "the reservation holder is unchanged"
