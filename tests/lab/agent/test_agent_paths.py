"""Paths that appear after unfencing, which the kernel never registers.

Without multipathd, `monitor` reports the unregistered path and `on` repairs it.
With multipathd managing the map, fence_pr hands it the key (setprkey/setprstatus)
and multipathd registers the new path itself.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import rtslib_fb as rts

from ..fixtures.agentrun import Node
from ..fixtures.topology import _disks_on_host, _hosts, _naa, scsi_keys, settle, sh, wait_for


def test_late_path_reported_by_monitor_and_repaired_by_on(clean_lio) -> None:  # type: ignore[no-untyped-def]
    lab = clean_lio
    n1 = Node("node1", lab.maps[1])
    assert n1.run("on", "node1").rc == 0
    new = lab.add_path_to_maps(1)
    try:
        probe = [lun.paths[(2, 1)].dev for lun in lab.luns]
        assert [scsi_keys(d).count(n1.key) for d in probe] == [2] * len(lab.luns)
        r = n1.run("monitor")
        assert r.rc == 1 and "registered on 2 of 3 path(s)" in r.err, r
        r = n1.run("on", "node1")
        assert r.rc == 0, r
        assert [scsi_keys(d).count(n1.key) for d in probe] == [3] * len(lab.luns)
        r = n1.run("monitor")
        assert r.rc == 0, r
    finally:
        lab.remove_path(1, new)


MULTIPATH_CONF = """
defaults {
    user_friendly_names no
    find_multipaths no
    reservation_key file
    polling_interval 1
}
blacklist {
    devnode "^nvme"
    device {
        vendor "LIO-ORG"
        product "RAMDISK-MCP"
    }
}
"""


class MultipathdNode:
    """The local node's own view: one FILEIO LUN over tcm_loop paths, maps made by multipathd.

    The session's RAMDISK LUNs are blacklisted, so multipathd leaves the two-node maps alone.
    """

    def __init__(self) -> None:
        Path("/etc/multipath").mkdir(exist_ok=True)
        Path("/etc/multipath.conf").write_text(MULTIPATH_CONF)
        self.backing = "/dev/shm/fence_pr-mpathd.img"
        with open(self.backing, "wb") as f:
            f.truncate(4 << 20)
        self.so = rts.FileIOStorageObject("mpathd", self.backing, size=4 << 20)
        self.targets: list[rts.Target] = []
        self.paths = [self.add_path(), self.add_path()]
        subprocess.run(["multipathd"], check=True)  # daemonizes
        self.map = wait_for(self._map, "multipathd map", timeout=60)

    def add_path(self) -> str:
        before = _hosts()
        t = rts.Target(rts.FabricModule("loopback"), _naa())
        rts.LUN(rts.TPG(t, 1), 0, self.so)
        self.targets.append(t)
        (host,) = wait_for(lambda: _hosts() - before, "tcm_loop host")
        disks = wait_for(lambda: _disks_on_host(host), "disk")
        settle()
        return str(disks[0])

    def _map(self) -> str | None:
        out = sh("multipathd", "show", "maps", "raw", "format", "%n %N", check=False)
        for line in out.splitlines():
            name, npaths = line.split()
            if int(npaths) == len(self.paths):
                return name
        return None

    def npaths(self) -> int:
        out = sh("multipathd", "show", "maps", "raw", "format", "%n %N")
        return next(int(n) for name, n in (ln.split() for ln in out.splitlines())
                    if name == self.map)

    def teardown(self) -> None:
        sh("multipathd", "shutdown", check=False)
        time.sleep(1)
        sh("dmsetup", "remove", "--retry", self.map, check=False)
        for t in self.targets:
            t.delete()
        self.so.delete()
        os.unlink(self.backing)
        settle()


def dm_maps() -> dict[str, tuple[str, str]]:
    """name -> (uuid, table) of every dm map, to put back what multipathd flushes."""
    info = sh("dmsetup", "info", "-c", "--noheadings", "-o", "name,uuid", "--separator", " ")
    out: dict[str, tuple[str, str]] = {}
    if info.startswith("No devices found"):
        return out
    for line in info.splitlines():
        name, _, uuid = line.strip().partition(" ")
        if name:
            out[name] = (uuid, sh("dmsetup", "table", name).strip())
    return out


@pytest.fixture
def mpathd_node() -> Iterator[MultipathdNode]:
    """multipathd flushes the lab's hand-made maps over blacklisted paths when it starts:
    they are recreated afterwards for the tests that follow."""
    before = dm_maps()
    node = MultipathdNode()
    yield node
    node.teardown()
    for name, (uuid, table) in before.items():
        if name not in dm_maps():
            argv = ["dmsetup", "create", name, "--table", table]
            sh(*([*argv, "--uuid", uuid] if uuid else argv))
    settle()


def test_multipathd_registers_a_path_added_later(mpathd_node) -> None:  # type: ignore[no-untyped-def]
    n = mpathd_node
    me = Node("node1", [f"/dev/mapper/{n.map}"])
    r = me.run("on", "node1", "-v")
    assert r.rc == 0, r
    assert "multipathd will register" in r.err, r
    prkeys = Path("/etc/multipath/prkeys").read_text()
    assert f"0x{me.key:x}" in prkeys.lower(), prkeys
    assert scsi_keys(n.paths[0]).count(me.key) == 2
    n.paths.append(n.add_path())
    wait_for(lambda: n.npaths() == 3, "multipathd to add the new path", timeout=60)
    wait_for(lambda: scsi_keys(n.paths[0]).count(me.key) == 3,
             "multipathd to register the new path", timeout=60)
    r = me.run("monitor")
    assert r.rc == 0, r
