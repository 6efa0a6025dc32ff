"""LIO iSCSI target (rtslib-fb) plus open-iscsi initiator, both inside the lab guest.

Unlike tcm_loop, a real transport: sessions log out and in, and each login is a
new I_T nexus (open-iscsi's ISID qualifier is the session id), which is how
field clusters lose path registrations.  PREEMPT_ABORT on a raw iSCSI path is
also safe here, where on a raw tcm_loop path it deadlocks LIO.

A node is an initiator IQN; its path p is an open-iscsi iface bound to portal
127.0.0.(p+1):3260 of the one target portal group.
"""

from __future__ import annotations

import glob
import os
import subprocess
import warnings
from pathlib import Path

import rtslib_fb as rts

from .topology import (
    ScsiLun,
    ScsiPath,
    create_node_maps,
    modprobe,
    reload_multipath_map,
    settle,
    sh,
    wait_for,
)

TARGET_IQN = "iqn.2026-01.lab.fence-pr:tgt"
PORT = 3260


def node_iqn(node: int) -> str:
    return f"iqn.2026-01.lab.fence-pr:node{node}"


def portal(path: int) -> str:
    return f"127.0.0.{path + 1}:{PORT}"


def iface(node: int, path: int) -> str:
    return f"n{node}p{path}"


def start_iscsid() -> None:
    """The guest has no systemd: start iscsid by hand once (it daemonizes)."""
    pidfile = Path("/run/iscsid.pid")
    if pidfile.exists() and Path(f"/proc/{pidfile.read_text().strip()}").exists():
        return
    sh("iscsid")
    wait_for(lambda: subprocess.run(["iscsiadm", "-m", "session"], capture_output=True)
             .returncode in (0, 21), "iscsid to answer")  # 21: no sessions yet


def _session_dir(node: int, path: int) -> Path | None:
    for s in glob.glob("/sys/class/iscsi_session/session*"):
        if Path(s, "ifacename").read_text().strip() == iface(node, path):
            return Path(s)
    return None


def _session_disks(sdir: Path) -> dict[int, str]:
    """LUN number -> /dev/sdX for one session's disks."""
    out = {}
    for d in glob.glob(f"{sdir}/device/target*/*:*:*:*/block/*"):
        out[int(d.split("/")[-3].rsplit(":", 1)[1])] = "/dev/" + os.path.basename(d)
    return out


class IscsiLab:
    """N ramdisk LUNs behind one iSCSI target; every (node, path) is an iSCSI session."""

    def __init__(self, luns: int = 2, nodes: int = 2, paths: int = 2, size_mb: int = 4) -> None:
        modprobe("target_core_mod", "iscsi_target_mod", "iscsi_tcp", "sd_mod", "dm_multipath")
        for d in ("/etc/rtslib-fb-target/pr", "/etc/rtslib-fb-target/alua", "/etc/target/pr"):
            Path(d).mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():  # dbroot already fixed when the lio fixture ran first
            warnings.simplefilter("ignore")
            self.root = rts.RTSRoot()
        self.nodes, self.npaths = nodes, paths
        self.luns = [
            ScsiLun(i, rts.RDMCPStorageObject(f"iscsi{i}", size=size_mb * 1024 * 1024))
            for i in range(luns)
        ]
        self.target = rts.Target(rts.FabricModule("iscsi"), TARGET_IQN)
        self.tpg = rts.TPG(self.target, 1)
        self.tpg.set_attribute("authentication", "0")
        tluns = [rts.LUN(self.tpg, lun.index, lun.so) for lun in self.luns]
        for path in range(paths):
            rts.NetworkPortal(self.tpg, portal(path).rsplit(":", 1)[0], PORT)
        for node in range(1, nodes + 1):  # explicit ACLs: each node its own I_T nexuses
            acl = rts.NodeACL(self.tpg, node_iqn(node))
            for tl in tluns:
                rts.MappedLUN(acl, tl.lun, tl)
        self.tpg.enable = True
        start_iscsid()
        for node in range(1, nodes + 1):
            for path in range(paths):
                name = iface(node, path)
                sh("iscsiadm", "-m", "iface", "-I", name, "-o", "new")
                sh("iscsiadm", "-m", "iface", "-I", name, "-o", "update",
                   "-n", "iface.initiatorname", "-v", node_iqn(node))
                self.login(node, path)
        self.maps: dict[int, list[str]] = {}

    def _node_args(self, node: int, path: int) -> list[str]:
        return ["iscsiadm", "-m", "node", "-T", TARGET_IQN, "-p", portal(path),
                "-I", iface(node, path)]

    def login(self, node: int, path: int) -> None:
        """Log (node, path) in and record its sd device per LUN."""
        # Logout drops the node record, so (re)create it before every login.
        sh(*self._node_args(node, path), "-o", "new", check=False)
        sh(*self._node_args(node, path), "-l")
        sdir = wait_for(lambda: _session_dir(node, path), f"session {iface(node, path)}")
        n = len(self.luns)
        disks = wait_for(lambda: len(_session_disks(sdir)) == n and _session_disks(sdir),
                         f"{n} disks on {iface(node, path)}")
        settle()
        host = int(os.path.realpath(sdir / "device").split("/host")[-1].split("/")[0])
        for idx, dev in disks.items():
            wait_for(lambda d=dev: os.path.exists(d), dev)
            self.luns[idx].paths[(node, path)] = ScsiPath(dev, node, path, host)

    def logout(self, node: int, path: int) -> None:
        """End (node, path)'s session: its sd devices disappear (a map keeps a dead path)."""
        sh(*self._node_args(node, path), "-u")
        wait_for(lambda: _session_dir(node, path) is None, f"{iface(node, path)} logged out")
        for lun in self.luns:
            lun.paths.pop((node, path), None)
        settle()

    def relogin(self, node: int, path: int) -> None:
        """Logout + login: a new session, ISID and sd devices for the same (node, path)."""
        self.logout(node, path)
        self.login(node, path)

    def isid(self, node: int, path: int) -> str:
        """The session's ISID as in a TransportID, e.g. 0x00023d000001.

        sysfs does not show it; open-iscsi builds it from its fixed 0x00023d
        prefix and the session id (seen in READ FULL STATUS).
        """
        sdir = _session_dir(node, path)
        assert sdir is not None, f"{iface(node, path)} not logged in"
        return f"0x00023d{int(sdir.name.removeprefix('session')):06x}"

    def make_maps(self, node: int, features: str = "0") -> list[str]:
        """One dm-multipath map per LUN over `node`'s sessions (i<node>-lun<i>)."""
        self.maps[node] = create_node_maps(self.luns, node, "i", features)
        return self.maps[node]

    def refresh_maps(self, node: int) -> None:
        """Reload `node`'s maps whose devices are not its current sessions' (after a re-login)."""
        from .topology import dm_path_states

        for lun, m in zip(self.luns, self.maps.get(node, []), strict=True):
            want = lun.node_paths(node)
            if set(dm_path_states(m)) != {p.majmin for p in want}:
                reload_multipath_map(m, want)

    def reset(self) -> None:
        """Every session logged in, maps over the live devices, no registration."""
        from .topology import dm_message, dm_path_states, scsi_clear

        for node in range(1, self.nodes + 1):
            for path in range(self.npaths):
                if _session_dir(node, path) is None:
                    self.login(node, path)
            if node in self.maps:
                self.refresh_maps(node)
                # Fresh or reloaded LIO maps get paths failed by the first I/O
                # (udev's probe): reinstate them, as clean_lio does.
                for m in self.maps[node]:
                    for mm, st in dm_path_states(m).items():
                        if st == "F":
                            dm_message(m, f"reinstate_path {mm}")
        for lun in self.luns:
            scsi_clear(next(iter(lun.paths.values())).dev)

    def teardown(self) -> None:
        for node in list(self.maps):
            for m in self.maps.pop(node):
                sh("dmsetup", "remove", "--retry", os.path.basename(m), check=False)
        sh("iscsiadm", "-m", "node", "-u", check=False)
        sh("iscsiadm", "-k", "0", check=False)
        self.target.delete()
        for lun in self.luns:
            lun.so.delete()
        settle()
