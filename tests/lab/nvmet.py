"""NVMe-oF target (nvmet) over the loop transport, through configfs.

rtslib-fb does not model nvmet, so this is the same idea in miniature: one
object per configfs directory, callers never build paths.
"""

from __future__ import annotations

import glob
import os
import re
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
    """nvme_core is a module here: reload it to switch native multipath on or off."""
    disconnect_all()
    sh("modprobe", "-r", "nvme_loop", "nvme_fabrics", "nvme", "nvme_core", check=False)
    sh("modprobe", "nvme_core", f"multipath={'Y' if multipath else 'N'}")
    modprobe("nvme_loop")


def nvme_keys(dev: str) -> list[int]:
    """Registrant keys as the controller reports them (nvme-cli, not fence_pr)."""
    import json

    out = json.loads(sh("nvme", "resv-report", dev, "--eds", "-o", "json"))
    return [int(r["rkey"]) for r in out.get("regctlext", out.get("regctl", []))]
