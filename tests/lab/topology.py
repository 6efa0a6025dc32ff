"""Shared storage topologies inside the lab guest, built on LIO (rtslib-fb) and dm.

A "node" is an initiator identity: its own tcm_loop nexus WWNs (or iSCSI
initiator name) per path, so a single guest can host several cluster nodes
that each see every LUN through their own I_T nexuses.
"""

from __future__ import annotations

import glob
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import rtslib_fb as rts

from . import pace


def sh(*argv: str, check: bool = True) -> str:
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode == 6 and argv[0] == "sg_persist":
        # A pending Unit Attention (e.g. "reservations preempted" after another
        # nexus's CLEAR/PREEMPT) fails the first command; the kernel's own PR
        # ioctls retry it, sg3_utils does not: retry once like they do.
        r = subprocess.run(argv, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} -> {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def settle() -> None:
    sh("udevadm", "settle", "-t", "30", check=False)


def modprobe(*mods: str) -> None:
    for m in mods:
        sh("modprobe", m)


def wait_for(pred, what: str, timeout: float = 60.0,  # type: ignore[no-untyped-def]
             interval: float = 0.1):
    """pred()'s first true value.  `timeout` is nominal: the guest's pace (pace.py) scales
    it, and is measured again before giving up, so a guest slowed down by a neighbour in
    the middle of a wait gets its due; the error says what was not there."""
    start = time.monotonic()
    limit = timeout * pace.factor()
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() - start > limit:
            f = pace.factor(refresh=True)
            if timeout * f > limit:
                limit = timeout * f
                continue
            raise TimeoutError(f"lab: timed out after {limit:.0f}s ({timeout:.0f}s nominal, "
                               f"guest pace x{f:.2f}) waiting for {what}")
        time.sleep(interval)


@dataclass
class ScsiPath:
    dev: str  # /dev/sdX
    node: int
    path: int
    host: int

    @property
    def name(self) -> str:
        return os.path.basename(self.dev)

    @property
    def majmin(self) -> str:
        return Path(f"/sys/block/{self.name}/dev").read_text().strip()

    def set_state(self, state: str) -> None:
        """'offline' makes the SCSI midlayer fail every command: a dead path."""
        attr = Path(f"/sys/block/{self.name}/device/state")
        if attr.read_text().strip() != state:  # the same state again is EINVAL
            attr.write_text(state + "\n")  # 7.x wants the newline, else EINVAL


@dataclass
class ScsiLun:
    index: int
    so: rts.RDMCPStorageObject
    paths: dict[tuple[int, int], ScsiPath] = field(default_factory=dict)

    @property
    def serial(self) -> str:
        return str(self.so.wwn)

    @property
    def wwid(self) -> str:
        """What sd reports for a LIO LU: NAA 6, IEEE OUI 001405, serial digits."""
        return "naa.6001405" + self.serial.replace("-", "")[:25]

    def node_paths(self, node: int) -> list[ScsiPath]:
        return [p for (n, _), p in sorted(self.paths.items()) if n == node]


def _naa() -> str:
    return "naa.5001405" + uuid.uuid4().hex[:9]


def _hosts() -> set[int]:
    return {int(h.rsplit("host", 1)[1]) for h in glob.glob("/sys/class/scsi_host/host*")}


def _disks_on_host(host: int) -> dict[int, str]:
    """LUN number -> /dev/sdX for the disks behind SCSI host `host`."""
    out = {}
    for d in glob.glob(f"/sys/class/scsi_host/host{host}/device/target*/*:*:*:*/block/*"):
        lun = int(d.split("/")[-3].rsplit(":", 1)[1])
        out[lun] = "/dev/" + os.path.basename(d)
    return out


class LioLab:
    """N ramdisk LUNs, each exported to every (node, path) through tcm_loop."""

    def __init__(self, luns: int, nodes: int = 2, paths: int = 2, size_mb: int = 4) -> None:
        modprobe("target_core_mod", "target_core_user", "tcm_loop", "sd_mod", "dm_multipath")
        # rtslib points LIO's dbroot here; REGISTER sets APTPL on sd, and LIO
        # answers PR_STS_IOERR when it cannot write the APTPL file under it.
        for d in ("/etc/rtslib-fb-target/pr", "/etc/rtslib-fb-target/alua", "/etc/target/pr"):
            Path(d).mkdir(parents=True, exist_ok=True)
        self.root = rts.RTSRoot()
        self.fabric = rts.FabricModule("loopback")
        self.luns = [
            ScsiLun(i, rts.RDMCPStorageObject(f"lab{i}", size=size_mb * 1024 * 1024))
            for i in range(luns)
        ]
        self.targets: list[rts.Target] = []
        self.nexus: dict[tuple[int, int], rts.Target] = {}
        for node in range(1, nodes + 1):
            for path in range(paths):
                self.add_path(node, path)
        self.maps: dict[int, list[str]] = {}

    def add_path(self, node: int, path: int) -> None:
        """A new I_T nexus for `node`: a tcm_loop target exporting every LUN."""
        before = _hosts()
        t = rts.Target(self.fabric, _naa())
        tpg = rts.TPG(t, 1)  # rtslib sets a fresh nexus WWN: the SCSI host appears
        for lun in self.luns:
            rts.LUN(tpg, lun.index, lun.so)
        self.targets.append(t)
        self.nexus[(node, path)] = t
        host = wait_for(lambda: _hosts() - before, f"tcm_loop host for node {node} path {path}")
        (host,) = host
        n = len(self.luns)
        disks = wait_for(lambda: len(_disks_on_host(host)) == n and _disks_on_host(host),
                         f"{n} disks on host{host}")
        settle()
        for idx, dev in disks.items():
            wait_for(lambda d=dev: os.path.exists(d), dev)
            self.luns[idx].paths[(node, path)] = ScsiPath(dev, node, path, host)

    def make_maps(self, node: int, features: str = "0") -> list[str]:
        """One dm-multipath map per LUN over `node`'s paths (n<node>-lun<i>)."""
        self.maps[node] = create_node_maps(self.luns, node, "n", features)
        return self.maps[node]

    def add_path_to_maps(self, node: int) -> int:
        """A path that appears after registration: new nexus, reloaded into `node`'s maps.

        The kernel never registers it (pr-facts): the case fence_pr must repair.
        Returns the new path index; remove_path() undoes it.
        """
        path = 1 + max(p for (n, p) in self.luns[0].paths if n == node)
        self.add_path(node, path)
        self._reload_node_maps(node)
        return path

    def remove_path(self, node: int, path: int) -> None:
        """Take (node, path) out of the node's maps, then delete its nexus."""
        for lun in self.luns:
            lun.paths.pop((node, path), None)
        self._reload_node_maps(node)
        t = self.nexus.pop((node, path))
        self.targets.remove(t)
        t.delete()
        settle()

    def _reload_node_maps(self, node: int) -> None:
        for lun, m in zip(self.luns, self.maps.get(node, []), strict=True):
            reload_multipath_map(m, lun.node_paths(node))

    def check_paths(self) -> None:
        check_paths(self.maps)

    def teardown(self) -> None:
        for node in list(self.maps):
            for m in self.maps.pop(node):
                sh("dmsetup", "remove", "--retry", os.path.basename(m), check=False)
        for t in self.targets:
            t.delete()
        for lun in self.luns:
            lun.so.delete()
        settle()


def create_node_maps(luns: list[ScsiLun], node: int, prefix: str, features: str) -> list[str]:
    """One map per LUN over `node`'s paths, as multipathd would make on that node.

    dm uuids are unique per kernel, so the lab's carry the node as a suffix; fence_pr takes
    a map's WWID from its paths, not from the uuid.
    """
    names = []
    for lun in luns:
        name = f"{prefix}{node}-lun{lun.index}"
        create_multipath_map(name, lun.node_paths(node), features=features,
                             uuid=f"mpath-{lun.wwid[4:]}-{prefix}{node}")
        names.append(f"/dev/mapper/{name}")
    settle()
    return names


def create_multipath_map(name: str, paths: list[ScsiPath], *, features: str = "0",
                         uuid: str | None = None) -> None:
    size = Path(f"/sys/block/{paths[0].name}/size").read_text().strip()
    path_args = " ".join(f"{p.majmin} 1" for p in paths)
    table = (f"0 {size} multipath {features} 0 1 1 round-robin 0 {len(paths)} 1 {path_args}")
    argv = ["dmsetup", "create", name, "--table", table]
    if uuid:
        argv += ["--uuid", uuid]
    sh(*argv)


def reload_multipath_map(mapname: str, paths: list[ScsiPath], *, features: str = "0") -> None:
    """Replace a live map's path list (what multipathd does when paths come and go)."""
    size = Path(f"/sys/block/{paths[0].name}/size").read_text().strip()
    path_args = " ".join(f"{p.majmin} 1" for p in paths)
    table = f"0 {size} multipath {features} 0 1 1 round-robin 0 {len(paths)} 1 {path_args}"
    name = os.path.basename(mapname)
    sh("dmsetup", "reload", name, "--table", table)
    sh("dmsetup", "resume", name)
    settle()


def dm_message(mapname: str, msg: str) -> None:
    sh("dmsetup", "message", os.path.basename(mapname), "0", msg)


def dm_fail_path(mapname: str, path: ScsiPath) -> None:
    """Mark one path failed in the map only (the device itself still works)."""
    dm_message(mapname, f"fail_path {path.majmin}")


def dm_reinstate_path(mapname: str, path: ScsiPath) -> None:
    dm_message(mapname, f"reinstate_path {path.majmin}")


def dm_suspend(mapname: str, *, noflush: bool = True) -> None:
    """Suspend a map as multipathd does around a table reload: PR ioctls then get EAGAIN."""
    sh("dmsetup", "suspend", *(["--noflush"] if noflush else []), os.path.basename(mapname))


def dm_resume(mapname: str) -> None:
    sh("dmsetup", "resume", os.path.basename(mapname))


def dm_is_suspended(mapname: str) -> bool:
    return "SUSPENDED" in sh("dmsetup", "info", "-c", "--noheadings", "-o", "suspended",
                             os.path.basename(mapname)).upper()


def dm_path_states(mapname: str) -> dict[str, str]:
    """major:minor -> 'A' or 'F' from `dmsetup status`."""
    f = sh("dmsetup", "status", os.path.basename(mapname)).split()
    states = {}
    for i, tok in enumerate(f):
        if tok.count(":") == 1 and i + 1 < len(f) and f[i + 1] in ("A", "F"):
            states[tok] = f[i + 1]
    return states


def scsi_clear(dev: str) -> None:
    """Drop every registration and the reservation on a LU, through sg3_utils."""
    sh("sg_persist", "-n", "--out", "--register-ignore", "--param-sark=0x1abc1abc", dev)
    sh("sg_persist", "-n", "--out", "--clear", "--param-rk=0x1abc1abc", dev)


def scsi_keys(dev: str) -> list[int]:
    """Registered keys as the target reports them (sg3_utils, not fence_pr)."""
    out = sh("sg_persist", "-n", "--in", "--read-keys", dev)
    return [int(tok, 16) for tok in out.split() if tok.startswith("0x")]


def scsi_full_status(dev: str) -> list[tuple[int, str]]:
    """(key, initiator TransportID) per registered I_T nexus, from READ FULL STATUS.

    READ KEYS cannot tell which nexus holds a key; this can (iSCSI ids end in ",i,0x<ISID>").
    """
    out = sh("sg_persist", "-n", "--in", "--read-full-status", dev)
    regs: list[tuple[int, str]] = []
    key: int | None = None
    want_tid = False
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Key="):
            key = int(line[4:], 16)
        elif line.startswith("Transport Id of initiator"):
            want_tid = True
        elif want_tid and key is not None and ":" in line:
            regs.append((key, line.split(":", 1)[1].strip()))
            key, want_tid = None, False
    return regs


class ScratchDisk:
    """A LUN on a tcm_loop target of its own, held by no map: free to partition."""

    def __init__(self, name: str = "scratch", size_mb: int = 4) -> None:
        modprobe("target_core_mod", "tcm_loop", "sd_mod")
        self.so = rts.RDMCPStorageObject(name, size=size_mb * 1024 * 1024)
        before = _hosts()
        self.target = rts.Target(rts.FabricModule("loopback"), _naa())
        rts.LUN(rts.TPG(self.target, 1), 0, self.so)
        (host,) = wait_for(lambda: _hosts() - before, "scratch tcm_loop host")
        disks = wait_for(lambda: _disks_on_host(host), f"scratch disk on host{host}")
        settle()
        self.dev = disks[0]

    def delete(self) -> None:
        self.target.delete()
        self.so.delete()
        settle()


def take_unit_attention(dev: str) -> None:
    """One O_DIRECT read on the sd device itself, as multipathd's TUR checker would send:
    sd retries a unit attention (dm's failfast I/O does not), so it is consumed here."""
    import mmap

    buf = mmap.mmap(-1, 4096)
    try:
        fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
        try:
            os.readv(fd, [buf])
        finally:
            os.close(fd)
    except OSError:
        pass
    finally:
        buf.close()


def check_paths(maps: dict[int, list[str]]) -> None:
    """Reinstate dm paths whose disk is running: the job of multipathd's path checker.

    Every PR change raises a unit attention on the other nexuses; dm sends I/O with
    failfast, so the next I/O fails the path even though the disk is fine. Like the
    checker's TUR, a read on each running path takes the pending unit attention first,
    so the next I/O through the map does not fail the path again.
    """
    for names in maps.values():
        for m in names:
            for majmin, state in dm_path_states(m).items():
                disk = os.path.basename(os.path.realpath(f"/sys/dev/block/{majmin}"))
                running = Path(f"/sys/block/{disk}/device/state").read_text().strip()
                if running != "running":
                    continue
                take_unit_attention(f"/dev/{disk}")
                if state == "F":
                    dm_message(m, f"reinstate_path {majmin}")


def scsi_generation(dev: str) -> int:
    """The LU's PR generation: it moves on every registration change (sg3_utils)."""
    out = sh("sg_persist", "-n", "--in", "--read-keys", dev)
    for tok in out.replace("=", " ").replace(",", " ").split():
        if tok.startswith("0x"):
            return int(tok, 16)
    raise RuntimeError(f"no PR generation in: {out}")
