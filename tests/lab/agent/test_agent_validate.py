"""Bad input is refused with exit 1 and a message that says what to do; no device changes.

"No device changes" is checked at the target: the registered keys and the PR generation
(which moves on any registration change) are the same before and after each attempt.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from ..fixtures.agentrun import NODE_KEYS, Node, agent_argv, agent_stdin
from ..fixtures.topology import ScratchDisk, scsi_generation, scsi_keys

# `make lab-slow`: validation is the agent's own logic, the same on every kernel, and slow
# under TCG (231 s on a loaded 2-core machine, 2026-12-06); CI keeps the host's unit tests
# of it (tests/unit/test_bad_input.py, test_parsing.py).
pytestmark = pytest.mark.extra


@pytest.fixture
def registered_pair(clean_lio) -> Iterator[tuple[object, Node, Node]]:  # type: ignore[no-untyped-def]
    n1, n2 = Node("node1", clean_lio.maps[1]), Node("node2", clean_lio.maps[2])
    assert n1.run("on", "node1").rc == 0 and n2.run("on", "node2").rc == 0
    yield clean_lio, n1, n2


def snapshot(lab) -> list[tuple[int, list[int]]]:  # type: ignore[no-untyped-def]
    return [(scsi_generation(lun.paths[(2, 1)].dev), scsi_keys(lun.paths[(2, 1)].dev))
            for lun in lab.luns]


@pytest.fixture
def scratch() -> Iterator[ScratchDisk]:
    disk = ScratchDisk("validate")
    subprocess.run(["sfdisk", "-q", disk.dev], input="label: dos\n,1M\n", text=True, check=True)
    subprocess.run(["udevadm", "settle"], check=False)
    yield disk
    disk.delete()


# Refused before any device is opened: nothing here depends on the kernel's PR code.
@pytest.mark.once
def test_bad_input_is_refused_and_changes_nothing(registered_pair, scratch) -> None:  # type: ignore[no-untyped-def]
    lab, n1, _ = registered_pair
    before = snapshot(lab)
    subprocess.run(["modprobe", "loop"], check=True)
    backing = "/dev/shm/fence_pr-loop.img"
    with open(backing, "wb") as f:
        f.truncate(4 << 20)
    loop = subprocess.run(["losetup", "-f", "--show", backing], capture_output=True,
                          text=True, check=True).stdout.strip()
    subprocess.run(["dmsetup", "create", "linear-lab", "--table",
                    f"0 8 linear {lab.luns[0].paths[(1, 0)].dev} 0"], check=True)
    same_lun = f"{n1.devices[0]},{lab.luns[0].paths[(1, 0)].dev}"
    good = ["--devices", ",".join(n1.devices), "--local_node", "node1"]
    cases = {
        "partition": (["-o", "off", "-n", "node2", "--node_keys", NODE_KEYS, "--local_node",
                       "node1", "--devices", scratch.dev + "1"], f"use {scratch.dev}"),
        "character device": (["-o", "off", "-n", "node2", "--node_keys", NODE_KEYS,
                              "--local_node", "node1", "--devices", "/dev/null"],
                             "not a block device"),
        "missing device": (["-o", "off", "-n", "node2", "--node_keys", NODE_KEYS,
                            "--local_node", "node1", "--devices", "/dev/nonexistent"],
                           "No such file"),
        "loop device": (["-o", "off", "-n", "node2", "--node_keys", NODE_KEYS, "--local_node",
                         "node1", "--devices", loop], "loop device"),
        "dm linear": (["-o", "off", "-n", "node2", "--node_keys", NODE_KEYS, "--local_node",
                       "node1", "--devices", "/dev/mapper/linear-lab"], "not a multipath map"),
        "same LUN twice": (["-o", "off", "-n", "node2", "--node_keys", NODE_KEYS,
                            "--local_node", "node1", "--devices", same_lun], "same device"),
        "malformed key": (["-o", "off", "-n", "node2", "--node_keys", "node1=0x1,node2=zz",
                           *good], "invalid reservation key"),
        "duplicate keys": (["-o", "off", "-n", "node2", "--node_keys", "node1=0x5,node2=0x5",
                            *good], "node1"),
        "fence itself": (["-o", "off", "-n", "node1", "--node_keys", NODE_KEYS, *good],
                         "itself"),
        "unknown node": (["-o", "off", "-n", "node9", "--node_keys", NODE_KEYS, *good],
                         "node9"),
        "on for another node": (["-o", "on", "-n", "node2", "--node_keys", NODE_KEYS, *good],
                                "must run on node2"),
    }
    try:
        for name, (args, needle) in cases.items():
            # The action itself, then validate-all with the same options (except for `on`
            # run for another node, which only `on` itself refuses).
            # Nor for "fence itself": Pacemaker's validate names this node as the port.
            actions = [args[1]] + ([] if name in ("on for another node", "fence itself")
                                   else ["validate-all"])
            for action in actions:
                argv = list(args)
                argv[1] = action
                r = agent_argv(*argv)
                assert r.rc == 1, f"{name} ({argv}): {r}"
                assert needle in r.err, f"{name}: {needle!r} not in {r.err!r}"
                assert "Traceback" not in r.err, r
            assert snapshot(lab) == before, f"{name} changed a device"
    finally:
        subprocess.run(["dmsetup", "remove", "linear-lab"], check=False)
        subprocess.run(["losetup", "-d", loop], check=False)


def test_validate_all_accepts_a_good_configuration(registered_pair) -> None:  # type: ignore[no-untyped-def]
    lab, n1, _ = registered_pair
    before = snapshot(lab)
    r = agent_stdin({"action": "validate-all", "devices": ",".join(n1.devices),
                     "node_keys": NODE_KEYS, "local_node": "node1", "port": "node2"})
    assert r.rc == 0 and "valid" in r.out, r
    assert snapshot(lab) == before
