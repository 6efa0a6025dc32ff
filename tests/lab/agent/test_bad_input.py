"""Hostile input against real LUNs: whatever fence_pr refuses, it refuses before touching a
device -- the registrations and the PR generation at the target are unchanged.

The same generator as tests/unit/test_bad_input.py, here with the lab's LUNs as the good
devices and a partition, a loop device and a symlink loop among the bad ones
(FENCE_PR_LAB_BAD_INPUTS cases, 10 by default; 1,000 in `make reliability`)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from tests.badinput import Case, cases, check, symlink_loop

from ..fixtures.agentrun import NODE_KEYS, Node
from ..fixtures.topology import ScratchDisk, check_paths, scsi_generation, scsi_keys

N = int(os.environ.get("FENCE_PR_LAB_BAD_INPUTS", "10"))

# Generated hostile input: `make reliability` runs it (1,000 cases), CI does not (marker
# `extra`); CI keeps the named bad inputs against the same LUNs in test_agent_validate.py and
# the generator on the host (tests/unit/test_bad_input.py).
pytestmark = pytest.mark.extra


@pytest.fixture(scope="module")
def bad_devices(lio) -> Iterator[list[str]]:  # type: ignore[no-untyped-def]
    disk = ScratchDisk("badinput")
    subprocess.run(["sfdisk", "-q", disk.dev], input="label: dos\n,1M\n", text=True, check=True)
    subprocess.run(["udevadm", "settle"], check=False)
    subprocess.run(["modprobe", "loop"], check=True)
    backing = "/dev/shm/fence_pr-badinput.img"
    with open(backing, "wb") as f:
        f.truncate(4 << 20)
    loop = subprocess.run(["losetup", "-f", "--show", backing], capture_output=True, text=True,
                          check=True).stdout.strip()
    yield [disk.dev + "1", loop, "/dev/sg0", symlink_loop(tempfile.mkdtemp())]
    subprocess.run(["losetup", "-d", loop], check=False)
    os.unlink(backing)
    disk.delete()


def snapshot(lab) -> list[tuple[int, list[int]]]:  # type: ignore[no-untyped-def]
    return [(scsi_generation(lun.paths[(2, 1)].dev), sorted(scsi_keys(lun.paths[(2, 1)].dev)))
            for lun in lab.luns]


def test_refused_input_changes_no_device(lio, bad_devices) -> None:  # type: ignore[no-untyped-def]
    nodes = Node("node1", lio.maps[1]), Node("node2", lio.maps[2])

    def registered() -> list[tuple[int, list[int]]]:
        for n in nodes:
            assert n.run("on", n.name).rc == 0
        check_paths(lio.maps)
        return snapshot(lio)

    state = {"before": registered()}
    seen = {"refused": 0, "accepted": 0}

    @settings(max_examples=N, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(cases(bad_devices=bad_devices, good_devices=lio.maps[1], node_keys=NODE_KEYS))
    def one(case: Case) -> None:
        r = case.run()
        check(case, r)
        after = snapshot(lio)
        if r.returncode != 0:
            seen["refused"] += 1
            assert after == state["before"], (case, r.stderr.decode(errors="replace")[-1500:])
        else:
            seen["accepted"] += 1
            if after != state["before"]:  # a valid request did its job: start again
                state["before"] = registered()

    one()
    print(f"bad input in the lab: {seen}")
    assert seen["refused"] > seen["accepted"], seen
