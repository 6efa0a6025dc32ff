"""fence_scsi and fence_mpath in the lab guest, beside fence_pr (test_peers.py, bench).

Two cluster nodes live in one guest, so multipathd (one per host) must keep node1's and
node2's paths of the same LUN apart: a udev rule gives every path a LAB_WWID property that
names its node's map (the dm uuid the lab gave it, "<wwid>-i<node>") and multipath.conf
takes that as the path's WWID. Keys: `reservation_key file`, each map's key set as its
node's own `on` would have (multipathd setprkey).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from .topology import settle, sh, wait_for

RULES = Path("/etc/udev/rules.d/99-fence_pr-lab-wwid.rules")
CONF = Path("/etc/multipath.conf")


def scsi_hex(key: int) -> str:
    """A key as fence_scsi and fence_mpath compare it: sg_persist's hex, no 0x, no padding."""
    return f"{key:x}"


def dm_maps() -> dict[str, tuple[str, str]]:
    """name -> (uuid, table) of every dm device, from two dmsetup calls (not two per map)."""
    info = sh("dmsetup", "info", "-c", "--noheadings", "-o", "name,uuid", "--separator", " ")
    uuids: dict[str, str] = {}
    if not info.startswith("No devices found"):
        for line in info.splitlines():
            name, _, uuid = line.strip().partition(" ")
            if name:
                uuids[name] = uuid
    tables: dict[str, str] = {}
    for line in sh("dmsetup", "table").splitlines():
        name, sep, table = line.partition(": ")
        if sep:
            tables[name] = table.strip()
    return {n: (u, tables.get(n, "")) for n, u in uuids.items()}


def mpath_store(directory: str, maps: list[str], key: int) -> None:
    """fence_mpath's record of the devices its `on` registered, with the local key: its `off`
    preempts with the key found here."""
    os.makedirs(directory, exist_ok=True)
    Path(directory, "mpath.devices").write_text(
        "".join(f"{m}\t{scsi_hex(key)}\n" for m in maps))


class Multipathd:
    """multipathd managing the lab's per-node maps (IscsiLab or LioLab with make_maps)."""

    def __init__(self, lab, keys: dict[int, int], polling: int = 30) -> None:  # type: ignore[no-untyped-def]
        self.before = dm_maps()
        self.prkeys: dict[str, int] = {}
        rules, sections = [], []
        for node, maps in lab.maps.items():
            for lun, m in zip(lab.luns, maps, strict=True):
                name = os.path.basename(m)
                wwid = self.before[name][0].removeprefix("mpath-")
                for p in lun.node_paths(node):
                    rules.append(f'KERNEL=="{p.name}", ENV{{LAB_WWID}}="{wwid}"\n')
                sections.append(f"    multipath {{\n        wwid {wwid}\n        alias {name}\n"
                                "    }\n")
                self.prkeys[name] = keys[node]
        RULES.parent.mkdir(parents=True, exist_ok=True)
        RULES.write_text("".join(rules))
        # With 1,000 sd devices udevd may refuse the request (EAGAIN for minutes, `make
        # bench`); it re-reads changed rules files itself before its next event anyway.
        subprocess.run(["udevadm", "control", "--reload"], capture_output=True, timeout=30)
        sh("udevadm", "trigger", "--action=change", "--subsystem-match=block",
           "--sysname-match=sd*")
        settle()
        Path("/etc/multipath").mkdir(exist_ok=True)
        CONF.write_text(
            "defaults {\n    user_friendly_names no\n    find_multipaths no\n"
            f"    polling_interval {polling}\n    max_polling_interval {polling * 4}\n"
            "    uid_attrs \"sd:LAB_WWID\"\n    uid_attribute LAB_WWID\n"
            "    reservation_key file\n}\n"
            "blacklist {\n    devnode \"^nvme\"\n}\n"
            "blacklist_exceptions {\n    property \"LAB_WWID\"\n}\n"
            "multipaths {\n" + "".join(sections) + "}\n")
        self.want = {os.path.basename(m) for maps in lab.maps.values() for m in maps}
        subprocess.run(["multipathd"], check=True)  # daemonizes
        wait_for(lambda: self.managed() >= self.want, "multipathd to take over the lab's maps",
                 timeout=90 + 2 * len(self.want))  # 512 maps under TCG: minutes
        # Each node's key, as its own `on` would have left it (mpathpersist --register tells
        # multipathd; fence_pr's `on` does too). mpathpersist refuses a PREEMPT whose key is
        # not the map's reservation_key ("configured reservation key doesn't match"); a key
        # per map in a `multipaths` section was not applied by mpathpersist 0.9.4.
        for name, key in self.prkeys.items():
            sh("multipathd", "setprkey", "map", name, "key", f"0x{key:x}")

    def managed(self) -> set[str]:
        """Maps multipathd manages with all their paths."""
        out = sh("multipathd", "show", "maps", "raw", "format", "%n %N", check=False)
        return {f[0] for f in (ln.split() for ln in out.splitlines())
                if len(f) == 2 and f[1].isdigit() and int(f[1]) >= 2}

    def stop(self) -> None:
        """Stop multipathd and put every map back as it was (multipathd reloads tables with
        its own features and flushes maps over paths it does not manage)."""
        sh("multipathd", "shutdown", check=False)
        wait_for(lambda: subprocess.run(["pgrep", "-x", "multipathd"],
                                        capture_output=True).returncode != 0,
                 "multipathd to exit", timeout=60)
        # Maps multipathd made itself outlive it and hold the paths: the original maps
        # cannot be created over them (EBUSY) until they are gone.
        for name in set(dm_maps()) - set(self.before):
            sh("dmsetup", "remove", "--retry", name, check=False)
        settle()
        now = dm_maps()
        for name, (uuid, table) in self.before.items():
            if name not in now:
                argv = ["dmsetup", "create", name, "--table", table]
                sh(*([*argv, "--uuid", uuid] if uuid else argv))
            elif now[name][1] != table:
                sh("dmsetup", "reload", name, "--table", table)
                sh("dmsetup", "resume", name)
        RULES.unlink(missing_ok=True)
        CONF.unlink(missing_ok=True)
        # With 1,000 sd devices udevd may refuse the request (EAGAIN for minutes, `make
        # bench`); it re-reads changed rules files itself before its next event anyway.
        subprocess.run(["udevadm", "control", "--reload"], capture_output=True, timeout=30)
        settle()
        time.sleep(0.1)


FAKE_CMAPCTL = Path("/run/fence_pr-lab-cmapctl")
CLUSTER = "labcluster"
NODES = ("node1", "node2")


def fake_cmapctl(local: str) -> str:
    """A corosync-cmapctl stand-in answering both agents: fence_scsi asks for
    `totem.cluster_name` and `nodelist`, fence_pr for the whole map."""
    nodelist = "".join(
        f"nodelist.node.{i}.name (str) = {n}\nnodelist.node.{i}.nodeid (u32) = {i + 1}\n"
        f"nodelist.node.{i}.ring0_addr (str) = 10.0.0.{i + 1}\n" for i, n in enumerate(NODES))
    nodelist += f"nodelist.local_node_pos (u32) = {NODES.index(local)}\n"
    name = f"totem.cluster_name (str) = {CLUSTER}\n"
    FAKE_CMAPCTL.write_text(
        "#!/bin/sh\ncase \"$1\" in\n"
        f"totem.cluster_name) printf '%s' '{name}' ;;\n"
        f"nodelist) printf '%s' '{nodelist}' ;;\n"
        f"*) printf '%s' '{name}{nodelist}' ;;\nesac\n")
    FAKE_CMAPCTL.chmod(0o755)
    return str(FAKE_CMAPCTL)
