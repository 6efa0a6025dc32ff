"""NVMe-oF target (nvmet) over the loop transport, through configfs.

rtslib-fb does not model nvmet, so this is the same idea in miniature: one
object per configfs directory, callers never build paths.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from .topology import modprobe, settle, sh, wait_for

NVMET = Path("/sys/kernel/config/nvmet")


def _write(path: Path, value: str) -> None:
    path.write_text(value + "\n")


@dataclass
class Host:
    """An initiator identity: a cluster node as NVMe sees it (host NQN + host ID)."""

    nqn: str
    hostid: str

    @classmethod
    def for_node(cls, node: int) -> Host:
        hid = str(uuid.UUID(int=0x1AB0000000000000000000000000000 + node))
        return cls(f"nqn.2014-08.org.nvmexpress:uuid:{hid}", hid)


class Subsystem:
    def __init__(self, nqn: str, namespaces: int, size_mb: int = 4) -> None:
        modprobe("nvmet", "nvme_loop")
        self.nqn = nqn
        self.dir = NVMET / "subsystems" / nqn
        self.dir.mkdir()
        _write(self.dir / "attr_allow_any_host", "1")
        self.nsids = []
        for i in range(1, namespaces + 1):
            img = Path(f"/dev/shm/{nqn.rsplit(':', 1)[-1]}-ns{i}.img")
            with open(img, "wb") as f:
                f.truncate(size_mb * 1024 * 1024)
            ns = self.dir / "namespaces" / str(i)
            ns.mkdir()
            _write(ns / "device_path", str(img))
            # Reservations must be switched on before the namespace is enabled.
            resv = ns / "resv_enable"
            self.has_resv = resv.exists()
            if self.has_resv:
                _write(resv, "1")
            _write(ns / "enable", "1")
            self.nsids.append(i)
        self.ports: list[Path] = []

    def add_port(self, portid: int) -> None:
        port = NVMET / "ports" / str(portid)
        if not port.exists():
            port.mkdir()
            _write(port / "addr_trtype", "loop")
            _write(port / "addr_traddr", str(portid))
        os.symlink(self.dir, port / "subsystems" / self.nqn)
        self.ports.append(port)

    def connect(self, host: Host, portid: int) -> str:
        """Connect `host` through port `portid`; return the new controller (nvmeN)."""
        before = set(os.listdir("/sys/class/nvme")) if os.path.isdir("/sys/class/nvme") else set()
        # nvme-cli 2.4 refuses a second host on the same port as "already
        # connected" even with -D: give each (node, path) its own loop port.
        sh("nvme", "connect", "-t", "loop", "-a", str(portid), "-n", self.nqn,
           "-q", host.nqn, "-I", host.hostid)
        new = wait_for(lambda: set(os.listdir("/sys/class/nvme")) - before,
                       f"controller for {host.nqn}")
        (ctrl,) = new
        settle()
        return str(ctrl)

    def teardown(self) -> None:
        for port in self.ports:
            link = port / "subsystems" / self.nqn
            if link.is_symlink():
                link.unlink()
        for ns in self.nsids:
            nsdir = self.dir / "namespaces" / str(ns)
            _write(nsdir / "enable", "0")
            nsdir.rmdir()
        self.dir.rmdir()


def nsid_of(dev: str) -> int:
    """The namespace ID behind a block device (heads and per-controller disks alike).

    Disk names do not follow NSIDs (nvme1n2 may be NSID 1): always ask sysfs.
    """
    return int(Path(f"/sys/block/{os.path.basename(dev)}/nsid").read_text())


def namespaces_of(ctrl: str) -> list[str]:
    """Block devices reached through controller `ctrl`.

    Without native multipath these are nvmeXnY under the controller; with it,
    the controller only has hidden paths (nvmeXcYnZ) and the block devices are
    the subsystem's heads.
    """
    own = [os.path.basename(d) for d in glob.glob(f"/sys/class/nvme/{ctrl}/nvme*n*")]
    plain = [n for n in own if re.fullmatch(r"nvme\d+n\d+", n)]
    if plain:
        return sorted("/dev/" + n for n in plain)
    heads = {os.path.basename(h) for h in glob.glob("/sys/class/nvme-subsystem/*/nvme*n*")
             if os.path.exists(f"/sys/class/nvme-subsystem/{h.split('/')[-2]}/{ctrl}")}
    return sorted("/dev/" + n for n in heads)


def disconnect_all() -> None:
    sh("nvme", "disconnect-all", check=False)
    settle()


def reload_nvme_core(multipath: bool) -> None:
    """nvme_core is a module here: reload it to switch native multipath on or off.

    nvmet itself uses nvme_core, so the whole nvmet configfs tree must be gone
    first (NvmeLab.set_multipath rebuilds it).  One module per modprobe -r:
    given several, modprobe stops at the first one not loaded.
    """
    disconnect_all()
    for mod in ("nvme_loop", "nvmet_tcp", "nvmet", "nvme_fabrics", "nvme", "nvme_core"):
        if Path(f"/sys/module/{mod}").exists():
            sh("modprobe", "-r", mod)
    sh("modprobe", "nvme_core", f"multipath={'Y' if multipath else 'N'}")
    modprobe("nvmet", "nvme_loop")
    got = Path("/sys/module/nvme_core/parameters/multipath").read_text().strip()
    if got != ("Y" if multipath else "N"):
        raise RuntimeError(f"nvme_core multipath is {got} after reload")


def nvme_keys(dev: str) -> list[int]:
    """Registrant keys as the controller reports them (nvme-cli, not fence_pr)."""
    import json

    out = json.loads(sh("nvme", "resv-report", dev, "--eds", "-o", "json"))
    return [int(r["rkey"]) for r in out.get("regctlext", out.get("regctl", []))]


def nvme_unregister(dev: str) -> bool:
    """Unregister this host whatever its key (nvme-cli, IEKEY); False if it was not registered.

    pr.h cannot unregister on NVMe (REGISTER to 0 leaves a key-0 registrant).
    """
    r = subprocess.run(["nvme", "resv-register", dev, "-n", str(nsid_of(dev)), "--rrega=1",
                        "--iekey"], capture_output=True, text=True)
    return r.returncode == 0


class NvmeLab:
    """One subsystem with `namespaces` namespaces; each (node, path) is its own controller.

    Every (node, path) gets its own loop port (portid node*10+path), because
    nvme-cli refuses a second host on a port.  Without native multipath each
    controller has its own nvmeXnY per namespace; with it (set_multipath) a
    node's controllers share one head per namespace.
    """

    def __init__(self, namespaces: int = 2, nodes: int = 2, paths: int = 2,
                 nqn: str = "nqn.2026-01.lab.fence-pr:nvme") -> None:
        self.nqn, self.nnamespaces = nqn, namespaces
        self.nodes, self.paths = nodes, paths
        self.ctrls: dict[tuple[int, int], str] = {}
        self._build()
        self.connect_all()

    def _build(self) -> None:
        self.sub = Subsystem(self.nqn, self.nnamespaces)
        for node in range(1, self.nodes + 1):
            for path in range(self.paths):
                self.sub.add_port(self.portid(node, path))

    @property
    def has_resv(self) -> bool:
        return self.sub.has_resv

    @property
    def nsids(self) -> list[int]:
        return list(self.sub.nsids)

    @staticmethod
    def portid(node: int, path: int) -> int:
        return node * 10 + path

    def ns_dir(self, nsid: int) -> Path:
        return self.sub.dir / "namespaces" / str(nsid)

    def connect(self, node: int, path: int) -> str:
        ctrl = self.sub.connect(Host.for_node(node), self.portid(node, path))
        self.ctrls[(node, path)] = ctrl
        return ctrl

    def connect_all(self) -> None:
        for node in range(1, self.nodes + 1):
            for path in range(self.paths):
                self.connect(node, path)

    def dev(self, node: int, path: int, nsid: int) -> str:
        """The block device for namespace `nsid` through (node, path)'s controller."""
        for d in namespaces_of(self.ctrls[(node, path)]):
            if nsid_of(d) == nsid:
                return d
        raise LookupError(f"no namespace {nsid} on {self.ctrls[(node, path)]}")

    def delete_controller(self, node: int, path: int) -> None:
        """A path fault: the controller and its namespaces go away (reconnect() undoes)."""
        ctrl = self.ctrls.pop((node, path))
        _write(Path(f"/sys/class/nvme/{ctrl}/delete_controller"), "1")
        wait_for(lambda: not os.path.exists(f"/sys/class/nvme/{ctrl}"), f"{ctrl} deleted")
        settle()

    def reconnect(self, node: int, path: int) -> str:
        return self.connect(node, path)

    def set_multipath(self, on: bool, nodes: tuple[int, ...] | None = None) -> None:
        """Reload nvme_core with native multipath on/off and reconnect `nodes` (default all).

        The target is rebuilt too (see reload_nvme_core): registrations are lost.
        """
        self.teardown()
        reload_nvme_core(on)
        self._build()
        for node in nodes or range(1, self.nodes + 1):
            for path in range(self.paths):
                self.connect(node, path)

    def reset(self) -> None:
        """No registration, no reservation, every controller connected, no native multipath."""
        if Path("/sys/module/nvme_core/parameters/multipath").read_text().strip() == "Y":
            self.set_multipath(False)
        for node in range(1, self.nodes + 1):
            for path in range(self.paths):
                if (node, path) not in self.ctrls:
                    self.connect(node, path)
        if not self.has_resv:
            return
        for nsid in self.nsids:
            for node in range(1, self.nodes + 1):
                nvme_unregister(self.dev(node, 0, nsid))
            left = nvme_keys(self.dev(1, 0, nsid))
            if left:
                raise RuntimeError(f"namespace {nsid} still has registrants {left}")

    def teardown(self) -> None:
        disconnect_all()
        self.ctrls.clear()
        self.sub.teardown()
        for port in self.sub.ports:
            if port.exists() and not any((port / "subsystems").iterdir()):
                port.rmdir()
