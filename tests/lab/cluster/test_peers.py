"""fence_pr beside fence_scsi (sg_persist) and fence_mpath (mpathpersist + multipathd).

The same scenarios with each agent, on the same LUNs (LIO over iSCSI: both peers always
send PREEMPT AND ABORT, which wedges LIO on tcm_loop), checked at the target with
sg_persist and by real writes. Where the agents agree it is asserted once for all three;
where fence_pr deliberately differs the expectation is per agent, and each difference is
named in docs/peers.md. Last, keys: a cluster unfenced by fence_scsi is fenced by fence_pr
in fence_scsi's key mode (key_value=id / hash), and the other way round.
"""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..fixtures.agentrun import AGENT, KEYS, NODE_KEYS, Result, agent_argv
from ..fixtures.io import write_block
from ..fixtures.peers import CLUSTER, Multipathd, fake_cmapctl, scsi_hex
from ..fixtures.topology import check_paths, dm_fail_path, scsi_keys, sh

AGENTS = ("fence_pr", "fence_scsi", "fence_mpath")

# A comparison with the other agents, not a claim about fence_pr's PR behaviour that the
# rest of the lab does not make (fence_scsi's keys are also checked against fence_scsi's own
# code in tests/unit/test_keys.py): `make peers` runs it, CI does not (marker `extra`).
pytestmark = pytest.mark.extra


def run(*argv: str) -> Result:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    return Result(r.returncode, r.stdout, r.stderr)


@dataclass
class Peer:
    """One agent as the two nodes in the guest run it; node 1 fences node 2."""

    agent: str
    lab: object

    def maps(self, node: str) -> list[str]:
        return self.lab.maps[int(node[-1])]  # type: ignore[attr-defined, no-any-return]

    def devs(self, node: str) -> str:
        if self.agent == "fence_scsi":
            return ",".join(scsi_paths(self.lab, int(node[-1])))
        return ",".join(self.maps(node))

    def as_node(self, node: str) -> None:
        """What each node's own `on` left in /var/run (one guest hosts both nodes)."""
        if self.agent == "fence_scsi":
            Path("/var/run/cluster.key").write_text(scsi_hex(KEYS[node]) + "\n")
            Path("/var/run/cluster.dev").write_text(self.devs(node).replace(",", "\n") + "\n")

    def store(self, node: str) -> str:
        return f"--store-path=/run/fence_mpath-{node}"

    def __call__(self, node: str, action: str, target: str | None = None) -> Result:
        self.as_node(node)
        if self.agent == "fence_pr":
            args = ["-o", action, "--devices", self.devs(node), "--node_keys", NODE_KEYS,
                    "--local_node", node]
            return agent_argv(*args, *(["-n", target] if target else []))
        key = [scsi_hex(KEYS[target or node])]
        if self.agent == "fence_scsi":
            return run("fence_scsi", "-o", action, *(["-k", *key] if action != "monitor"
                                                     else []), "-d", self.devs(node))
        return run("fence_mpath", "-v", "-o", action,
                   *(["-n", *key] if action != "monitor" else []), self.store(node),
                   "-d", self.devs(node))


@pytest.fixture(params=AGENTS)
def peer(request, clean_iscsi) -> Iterator[Peer]:  # type: ignore[no-untyped-def]
    mpd = None
    if request.param == "fence_mpath":
        mpd = Multipathd(clean_iscsi, {1: KEYS["node1"], 2: KEYS["node2"]})
    try:
        yield Peer(request.param, clean_iscsi)
    finally:
        if mpd is not None:
            mpd.stop()
        sh("rm", "-rf", "/var/run/cluster.key", "/var/run/cluster.dev", "/run/fence_mpath-node1",
           "/run/fence_mpath-node2", check=False)
        for p in (p for lun in clean_iscsi.luns for p in lun.paths.values()):
            p.set_state("running")


def scsi_paths(lab, node: int) -> list[str]:  # type: ignore[no-untyped-def]
    """fence_scsi's devices: the node's sd paths, every path of every LUN. Its sg_persist on
    a dm map needs a path dm has not failed, and the lab's maps have none without multipathd
    (docs/peers.md); fence_scsi registers each path of a map itself anyway."""
    return [p.dev for lun in lab.luns for p in lun.node_paths(node)]


def registered(lab, key: int) -> list[int]:  # type: ignore[no-untyped-def]
    return [scsi_keys(lun.paths[(2, 1)].dev).count(key) for lun in lab.luns]


def reservation(lab) -> list[str]:  # type: ignore[no-untyped-def]
    out = [sh("sg_persist", "-n", "--in", "--read-reservation", lun.paths[(2, 1)].dev)
           for lun in lab.luns]
    return ["WERO" if "Write Exclusive, registrants only" in o else o for o in out]


# Where fence_pr deliberately differs (docs/peers.md), with one of the fencer's two paths
# down: `monitor` (fence_pr checks every path; the peers only that their own files exist)
# and `off` (fence_scsi, given the paths, stops at the dead one). And the registrations of
# the node whose `on` took the reservation: fence_scsi, given a LUN's paths, skips every
# device whose reservation key is already its own, so its second path stays unregistered.
MONITOR_PATH_DOWN = {"fence_pr": 1, "fence_scsi": 0, "fence_mpath": 0}
OFF_PATH_DOWN = {"fence_pr": 0, "fence_scsi": 1, "fence_mpath": 0}
HOLDER_REGISTRATIONS = {"fence_pr": 2, "fence_scsi": 1, "fence_mpath": 2}


def test_same_scenario_each_agent(peer: Peer) -> None:
    lab = peer.lab
    luns = len(lab.luns)  # type: ignore[attr-defined]
    k1, k2 = KEYS["node1"], KEYS["node2"]

    # Unfence both nodes: every agent registers node2's key on each of its two paths (I_T
    # nexuses), and one Write Exclusive Registrants Only reservation is held (node1's).
    for node in ("node1", "node2"):
        r = peer(node, "on", node)
        assert r.rc == 0, r
    holder = HOLDER_REGISTRATIONS[peer.agent]
    assert registered(lab, k1) == [holder] * luns
    assert registered(lab, k2) == [2] * luns
    assert reservation(lab) == ["WERO"] * luns

    r = peer("node1", "status", "node2")
    assert r.rc == 0 and "ON" in r.out, r
    check_paths(lab.maps)  # type: ignore[attr-defined]
    r = peer("node1", "monitor")
    assert r.rc == 0, r

    # One of node1's two paths down (offline, and failed in its map as multipathd's
    # checker leaves it): fence_pr fences through the other path.
    down = [lun.paths[(1, 0)] for lun in lab.luns]  # type: ignore[attr-defined]
    for p, m in zip(down, lab.maps[1], strict=True):  # type: ignore[attr-defined]
        p.set_state("offline")
        dm_fail_path(m, p)
    try:
        r = peer("node1", "monitor")
        assert r.rc == MONITOR_PATH_DOWN[peer.agent], r
        r = peer("node1", "off", "node2")
        assert r.rc == OFF_PATH_DOWN[peer.agent], r
    finally:
        for p in down:
            p.set_state("running")
    check_paths(lab.maps)  # type: ignore[attr-defined]
    if registered(lab, k2) != [0] * luns:  # the peers fence once the path is back
        r = peer("node1", "off", "node2")
        assert r.rc == 0, r
    assert registered(lab, k2) == [0] * luns
    assert registered(lab, k1) == [holder] * luns
    assert reservation(lab) == ["WERO"] * luns
    # Writes on the sd paths: through the lab's iSCSI maps, udev's probe fails the paths.
    assert [write_block(lun.paths[(2, 1)].dev)
            for lun in lab.luns] == [errno.EBADE] * luns  # type: ignore[attr-defined]
    assert [write_block(lun.paths[(1, 1)].dev) for lun in lab.luns] == [0] * luns  # type: ignore[attr-defined]
    r = peer("node1", "status", "node2")
    assert r.rc == 2 and "OFF" in r.out, r

    # The fenced node cannot take node1 off: fence_pr refuses before sending anything
    # that could change a registration, the peers' PREEMPT AND ABORT is refused by the
    # target (reservation conflict) and their read-back fails the action.
    r = peer("node2", "off", "node1")
    assert r.rc == 1, r
    assert registered(lab, k1) == [holder] * luns


def test_validate_all_and_list_differ() -> None:
    """The peers' validate-all accepts what fence_pr rejects; only fence_pr lists nodes."""
    bad = "/dev/does-not-exist"
    r = agent_argv("-o", "validate-all", "--devices", bad, "--node_keys", NODE_KEYS,
                   "--local_node", "node1", "-n", "node2")
    assert r.rc == 1 and bad in r.err, r
    assert run("fence_scsi", "-o", "validate-all", "-k", "1", "-d", bad).rc == 0
    assert run("fence_mpath", "-o", "validate-all", "-n", "1", "-d", bad).rc == 0
    r = agent_argv("-o", "list", "--devices", bad, "--node_keys", NODE_KEYS,
                   "--local_node", "node1")
    assert r.rc == 1, r  # lists only from devices it can read
    assert run("fence_scsi", "-o", "list", "-d", bad).rc != 0
    r = run("fence_mpath", "-o", "list", "-d", bad)
    assert r.rc == 0 and "not working" in r.out, r  # exit 0, no list


@pytest.mark.parametrize("scheme", ["id", "hash"])
def test_fence_scsi_keys_interoperate(clean_iscsi, scheme: str) -> None:  # type: ignore[no-untyped-def]
    """fence_scsi unfences, fence_pr (key_value=<scheme>) fences; then the other way round."""
    lab = clean_iscsi
    cmap = fake_cmapctl("node1")
    scsi_opts = ["--corosync-cmap-path", cmap, "--key-value", scheme]

    def scsi(action: str, node: str, local: int) -> Result:
        devs = scsi_paths(lab, local)
        return run("fence_scsi", "-o", action, "-n", node, "-d", ",".join(devs), *scsi_opts)

    def pr(action: str, local: str, target: str, devs: list[str]) -> Result:
        return run(AGENT, "-o", action, "-n", target, "--devices", ",".join(devs),
                   "--key-value", scheme, "--corosync-cmap-path", cmap, "--local_node", local)

    try:
        # fence_scsi's `on` writes its key file; the last writer wins, so node2 goes first.
        for node in ("node2", "node1"):
            r = scsi("on", node, int(node[-1]))
            assert r.rc == 0, r
        k1 = int(Path("/var/run/cluster.key").read_text().strip(), 16)  # node1's, now
        assert registered(lab, k1) == [2] * len(lab.luns)
        r = pr("status", "node1", "node2", lab.maps[1])
        assert r.rc == 0 and "ON" in r.out, r
        r = pr("off", "node1", "node2", lab.maps[1])
        assert r.rc == 0, r
        keys = scsi_keys(lab.luns[0].paths[(1, 1)].dev)
        assert keys == [k1, k1], [hex(k) for k in keys]

        # The other way round: fence_pr unfences node2, fence_scsi (node1) fences it.
        check_paths(lab.maps)
        r = pr("on", "node2", "node2", lab.maps[2])
        assert r.rc == 0, r
        assert len(scsi_keys(lab.luns[0].paths[(1, 1)].dev)) == 4
        r = scsi("status", "node2", 1)
        assert r.rc == 0 and "ON" in r.out, r
        r = scsi("off", "node2", 1)
        assert r.rc == 0, r
        assert scsi_keys(lab.luns[0].paths[(1, 1)].dev) == [k1, k1]
    finally:
        sh("rm", "-f", "/var/run/cluster.key", "/var/run/cluster.dev", check=False)
    assert CLUSTER
