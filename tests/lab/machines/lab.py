"""The machine lab (issue 15): a storage machine and N cluster nodes, each its own QEMU
guest with its own kernel, userspace (Debian 12 or 13), udev, multipathd and NVMe host.

The storage machine exports every LUN over LIO iSCSI on two portals and one namespace
over nvmet NVMe/TCP (with reservations) on two ports; each node reaches all of it over two
storage networks and talks corosync over a third.  Nodes boot with systemd: their own
open-iscsi and nvme-cli logins, multipathd (`reservation_key file`) on every map, corosync
and Pacemaker started by their units, fence_pr as its .deb installed it.  The lab then
does what an admin does once (the stonith resource, as pcs would write it) and watches.

What the lab reads is the cluster's view (crm_mon's fence history on a node) and the
storage's (the keys the targets hold, read on the storage machine; O_DIRECT writes from
each node).
"""

from __future__ import annotations

import functools
import json
import shlex
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..fixtures.cluster import (
    CIB_SIGNON_FAILED,
    STONITH_ID,
    FenceEvent,
    cib_xml,
    fence_events,
    online_nodes,
    restart_fencer_once,
)
from . import config
from .machine import Machine, MachineError
from .net import LabNet

NETWORKS = ("c", "s1", "s2")
STORAGE_SCRIPT = "/etc/fpl/storage_guest.py"
HERE = Path(__file__).resolve().parent


@dataclass
class NodeKeys:
    """One node's registrations as the targets hold them."""

    luns: dict[str, int]  # LUN -> registrations (one per path)
    nvme: bool  # its host ID registered on the namespace


class MachineLab:
    def __init__(self, image: str = "debian12", nodes: int = 2, luns: int = 2,
                 workdir: Path | None = None) -> None:
        self.image, self.nnodes, self.nluns = image, nodes, luns
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="fence_pr-machines-")
        self.workdir = workdir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.net = LabNet(NETWORKS)
        storage_files = config.storage_files(nodes)
        storage_files["fpl/storage_guest.py"] = (HERE / "guest/storage_guest.py").read_text()
        self.storage = self._machine("storage", 0, config.STORAGE_NETS, storage_files)
        self.nodes: dict[str, Machine] = {}
        self.devices: list[str] = []
        self.token_ms = 10000
        self.start_s = 0.0  # power-on of the storage to every node unfenced

    def _machine(self, name: str, index: int, nets: tuple[str, ...],
                 files: config.Files) -> Machine:
        wd = self.workdir / name
        wd.mkdir(mode=0o700, parents=True, exist_ok=True)
        return Machine(name, index, self.image, nets, self.net, wd, files)

    @property
    def storage_cfg(self) -> dict[str, object]:
        return {"iqn": config.TARGET_IQN, "nqn": config.SUBSYS_NQN,
                "addrs": [config.storage_addr(n) for n in config.STORAGE_NETS],
                "iscsi_port": config.ISCSI_PORT, "nvme_port": config.NVME_PORT,
                "luns": self.nluns, "size_mb": 16,
                "initiators": [config.node_iqn(n) for n in range(1, self.nnodes + 1)]}

    def storage_call(self, *args: str) -> dict[str, Any]:
        cfg = shlex.quote(json.dumps(self.storage_cfg))
        r = self.storage.run(f"python3 {STORAGE_SCRIPT} {' '.join(args)} {cfg}", timeout=120,
                             check=True)
        return json.loads(r.out)  # type: ignore[no-any-return]

    # --- bring-up -----------------------------------------------------------------------

    def start(self) -> None:
        """Storage, then nodes, then the cluster as an admin finishes setting it up:
        every node online, the stonith resource created, every node unfenced."""
        t0 = time.monotonic()
        self.net.create()
        self.storage.boot()
        self.storage.wait_up()
        self.storage_call("setup")
        # corosync's token: what a scheduling stall of a TCG guest must not exceed, so the
        # nominal 10 s times the storage machine's pace (alone it is the fastest of them).
        self.token_ms = int(min(30000, 10000 * self.storage.pace))
        for n in range(1, self.nnodes + 1):
            name = config.node_name(n)
            self.nodes[name] = self._machine(name, n, config.NODE_NETS,
                                             config.node_files(n, self.nnodes, self.token_ms))
        for m in self.nodes.values():
            m.boot()
        for m in self.nodes.values():
            m.wait_up()
        for m in self.nodes.values():
            self.wait_storage(m)
        self.devices = self.node_devices(self.nodes["node1"])
        for m in list(self.nodes.values())[1:]:
            got = self.node_devices(m)
            if got != self.devices:
                raise MachineError(f"{m.name} sees {got}, node1 sees {self.devices}")
        self.wait_online()
        self.configure()
        for m in self.nodes.values():
            self.wait_registered(m)
        for name in self.nodes:
            self.wait_keys(name, True)
        self.start_s = time.monotonic() - t0

    def node_devices(self, m: Machine) -> list[str]:
        """The shared devices by the names every node has for them: one multipath map per
        LUN (its WWID) and the namespace's head (its by-id link)."""
        maps = self.maps(m)
        head = self.nvme_head(m)
        wwid = m.run(f"cat /sys/block/{head[0]}/wwid", check=True).out.strip()
        return [f"/dev/mapper/{w}" for w in sorted(maps)] + [f"/dev/disk/by-id/nvme-{wwid}"]

    def maps(self, m: Machine) -> dict[str, int]:
        """multipathd's maps on `m`: WWID -> active paths."""
        r = m.run("multipathd show maps raw format '%w %N'", timeout=60)
        out = {}
        for f in (ln.split() for ln in r.out.splitlines()):
            if len(f) == 2 and f[1].isdigit():
                out[f[0]] = int(f[1])
        return out

    def nvme_head(self, m: Machine) -> tuple[str, int]:
        """The namespace's native-multipath head on `m` and its path count ("", 0: none, or
        no block device yet: a namespace the host skipped has a sysfs entry but no node)."""
        r = m.run(
            "for s in /sys/class/nvme-subsystem/*; do "
            f"[ \"$(cat $s/subsysnqn 2>/dev/null)\" = {config.SUBSYS_NQN} ] || continue; "
            "for h in $s/nvme*n*; do [ -b /dev/$(basename $h) ] && echo $(basename $h) "
            "$(ls /sys/block/$(basename $h)/multipath 2>/dev/null | wc -l); done; done",
            timeout=60)
        f = r.out.split()
        return (f[0], int(f[1])) if len(f) >= 2 else ("", 0)

    def wait_storage(self, m: Machine) -> None:
        """Every LUN a multipath map with both paths, the namespace a head with both."""
        def ready() -> bool:
            maps = self.maps(m)
            return (len(maps) == self.nluns and all(n == 2 for n in maps.values())
                    and self.nvme_head(m)[1] == 2)

        try:
            m.wait(ready, f"{m.name}'s {self.nluns} maps and NVMe head with 2 paths each", 180)
        except MachineError as e:
            raise MachineError(f"{e}\n{m.name} has maps {self.maps(m)}, NVMe head "
                               f"{self.nvme_head(m)}; fpl-storage said: "
                               f"{m.run('journalctl -b -u fpl-storage -o cat').out[-1500:]}"
                               ) from None

    def online(self, m: Machine) -> set[str]:
        return online_nodes(m.run("crm_mon -1 --output-as=xml", timeout=60).out)

    def wait_online(self, names: set[str] | None = None) -> None:
        """Every node in `names` (all: None) sees exactly `names` online."""
        want = names or set(self.nodes)
        for name in sorted(want):
            m = self.nodes[name]
            m.wait(lambda m=m: self.online(m) == want,  # type: ignore[misc]
                   f"{name}'s Pacemaker to show {sorted(want)} online", 300)

    def configure(self) -> None:
        """The stonith resource and a Dummy, as `pcs stonith create` and `pcs resource
        create` leave them, replaced into the running cluster's configuration from node1."""
        nodes = [(config.node_name(n), n) for n in range(1, self.nnodes + 1)]
        conf = ET.fromstring(cib_xml(nodes, ",".join(self.devices), {})).find("configuration")
        assert conf is not None
        xml = ET.tostring(conf, encoding="unicode")
        self.nodes["node1"].run(f"cibadmin --replace --scope configuration --xml-text "
                                f"{shlex.quote(xml)}", timeout=120, check=True)

    def registered(self, m: Machine) -> bool:
        r = m.run("stonith_admin --list-registered", timeout=60)
        return STONITH_ID in r.out.split()

    def fencer_without_cib(self, m: Machine) -> str | None:
        """The running pacemaker-fenced's line saying it gave up on the CIB, if it did."""
        r = m.run("p=$(pgrep -x pacemaker-fenced) && journalctl -b -o cat _PID=$p "
                  f"| grep -F -m1 {shlex.quote(CIB_SIGNON_FAILED)}", timeout=60)
        return r.out.strip() or None

    def fencer_pid(self, m: Machine) -> str:
        """The pid of `m`'s running pacemaker-fenced ("" if none runs)."""
        return m.run("pgrep -x pacemaker-fenced").out.strip()

    def fencer_respawned(self, m: Machine, old: str) -> bool:
        """pacemakerd has started a new pacemaker-fenced in place of pid `old`."""
        return self.fencer_pid(m) not in ("", old)

    def wait_registered(self, m: Machine) -> None:
        """`m`'s pacemaker-fenced has registered the device.  Pacemaker 2.1.5's fencer gives
        the CIB manager 10 s at start and then runs on without a CIB for good, registering
        nothing ("No fence device" for every unfencing): it did so on node2 in a CI trial of
        the machine lab on 2026-12-07, four TCG guests on two cores.  Such a fencer is
        restarted once, by the one-kernel lab's policy (restart_fencer_once)."""
        what = f"pacemaker-fenced on {m.name} to register {STONITH_ID}"

        def settled() -> str | None:
            if self.registered(m):
                return "ok"
            gave_up = self.fencer_without_cib(m)
            return f"without the CIB: {gave_up!r}" if gave_up else None

        def restart() -> None:
            m.wait(lambda: m.run("cibadmin --query --scope nodes").rc == 0,
                   f"the CIB manager on {m.name} to answer cibadmin --query", 120)
            old = self.fencer_pid(m)
            m.run(f"kill -TERM {old}", check=True)
            m.wait(functools.partial(self.fencer_respawned, m, old),
                   f"pacemakerd on {m.name} to respawn pacemaker-fenced (was {old})", 60)

        try:
            restart_fencer_once(
                m.name, lambda: m.wait(settled, what, 180), restart,
                lambda state: MachineError(f"pacemaker-fenced on {m.name} went on {state} again "
                                           "after the lab restarted it"))
        except MachineError as e:
            log = m.run("journalctl -b -o cat -u pacemaker | grep -i -e fence_pr -e "
                        f"{STONITH_ID} -e 'CIB manager' | tail -5").out
            raise MachineError(f"{e}\npacemaker-fenced on {m.name} about it: {log}") from None

    def rejoin(self, name: str) -> float:
        """Power-cycle `name`, wait for it online everywhere and registered on every path;
        the seconds from power-on to its keys back."""
        m = self.nodes[name]
        m.power_loss()
        t0 = time.monotonic()
        m.boot()
        m.wait_up()
        self.wait_storage(m)
        self.wait_online()
        self.wait_registered(m)
        self.wait_keys(name, True)
        took = time.monotonic() - t0
        if not all(self.writes(name).values()):
            raise MachineError(f"{name} rejoined but cannot write: {self.writes(name)}")
        return took

    # --- what the storage holds ------------------------------------------------------------

    def keys(self) -> dict[str, NodeKeys]:
        """Each node's registrations as the targets hold them."""
        got = self.storage_call("keys")
        luns, nvme = got["luns"], got["nvme"]
        out = {}
        for n in range(1, self.nnodes + 1):
            iqn, hid = config.node_iqn(n), config.host_id(n).replace("-", "")
            per_lun = {lun: len([r for r in v["registrations"] if r["initiator"] == iqn])
                       for lun, v in luns.items()}
            on_ns = any(str(r["hostid"]).replace("-", "").lower() == hid
                        for r in nvme["registrations"])
            out[config.node_name(n)] = NodeKeys(per_lun, on_ns)
        return out

    def has_keys(self, name: str) -> bool | None:
        """True: registered on every path of every LUN and on the namespace; False: nowhere;
        None: somewhere in between."""
        k = self.keys()[name]
        if all(c == 2 for c in k.luns.values()) and k.nvme:
            return True
        if all(c == 0 for c in k.luns.values()) and not k.nvme:
            return False
        return None

    def wait_keys(self, name: str, present: bool, nominal: float = 240) -> None:
        try:
            self.storage.wait(lambda: self.has_keys(name) is present,
                              f"{name} {'registered' if present else 'removed'} on every "
                              "LUN path and the namespace, at the target", nominal)
        except MachineError as e:
            raise MachineError(f"{e}\nthe targets hold: {self.keys()}") from None

    def writes(self, name: str) -> dict[str, bool]:
        """Whether an O_DIRECT write from `name` to each shared device succeeds."""
        m = self.nodes[name]
        out = {}
        for dev in self.devices:
            r = m.run(f"timeout 60 dd if=/dev/zero of={dev} bs=4096 count=1 seek=100 "
                      "oflag=direct conv=notrunc status=none", timeout=120)
            out[dev] = r.rc == 0
        return out

    # --- faults ------------------------------------------------------------------------------

    def set_links(self, net: str, names: list[str], up: bool) -> None:
        """Cables of `names`' NICs on lab network `net` pulled (up=False) or plugged back."""
        for name in names:
            m = self.storage if name == "storage" else self.nodes[name]
            self.net.set_link(m.taps[net], up)

    def survivors(self) -> dict[str, bool | None]:
        """Each node: registered everywhere (True), nowhere (False), or partly (None)."""
        return {name: self.has_keys(name) for name in self.nodes}

    # --- the cluster's view ----------------------------------------------------------------

    def fence_history(self, name: str, target: str | None = None) -> list[FenceEvent]:
        r = self.nodes[name].run("crm_mon -1 --output-as=xml --fence-history=3", timeout=60)
        return fence_events(r.out, target)

    def diagnostics(self) -> str:
        parts = []
        for m in [self.storage, *self.nodes.values()]:
            parts.append(f"--- {m.name} console tail ---\n{m.console_tail(20)}")
            if m.running() and m.agent_up() and m is not self.storage:
                try:
                    parts.append(m.run("crm_mon -1 -r --fence-history=2", timeout=30).out)
                except MachineError as e:
                    parts.append(str(e))
        return "\n".join(parts)

    def stop(self) -> None:
        for m in [*self.nodes.values(), self.storage]:
            m.power_loss()
        self.net.destroy()
        if self._tmp:
            self._tmp.cleanup()
