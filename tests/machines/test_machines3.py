"""Three machines with quorum (issue 15): the node cut off from the cluster network is the
minority; the majority fences it and keeps writing, and it does not fence anyone."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.lab.machines.lab import MachineLab


def test_partitioned_minority_is_fenced(machine_lab3: MachineLab,
                                        latency: Callable[[str, float], None]) -> None:
    lab = machine_lab3
    lab.set_links("c", ["node3"], up=False)
    t0 = time.monotonic()
    try:
        lab.wait_keys("node3", False, nominal=300)
        latency("cut_to_minority_fenced", time.monotonic() - t0)
        for name in ("node1", "node2"):
            assert lab.has_keys(name) is True, lab.keys()
            assert all(lab.writes(name).values()), (name, lab.writes(name))
        assert not any(lab.writes("node3").values()), lab.writes("node3")
        by_minority = [e for e in lab.fence_history("node1")
                       if e.origin == "node3" and e.status == "success"
                       and e.action in ("off", "reboot")]
        assert not by_minority, f"the minority fenced someone: {by_minority}"
        lab.nodes["node3"].power_loss()
    finally:
        lab.set_links("c", ["node3"], up=True)
    latency("rejoin_to_unfenced", lab.rejoin("node3"))
