#!/usr/bin/python3
"""The machine lab's storage machine: LIO iSCSI on two portals and an nvmet NVMe/TCP
subsystem with reservations on two ports, and the keys as the targets hold them.

Runs inside the storage machine with Debian's python3 and python3-rtslib-fb; it imports
nothing from the lab, which passes what it needs as one JSON argument:

    storage_guest.py setup '{"iqn": ..., "nqn": ..., "addrs": [...], "iscsi_port": 3260,
                             "nvme_port": 4420, "luns": 2, "initiators": [...], "size_mb": 16}'
    storage_guest.py keys '{"nqn": ...}'    -> JSON: each LUN's and the namespace's keys
    storage_guest.py targets off|on '{...}' -> every portal and port down or up again
"""

from __future__ import annotations

import glob
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import rtslib_fb as rts

NVMET = Path("/sys/kernel/config/nvmet")
# On tmpfs itself: a file on the overlay root has no block size for nvmet ("invalid LBA
# data size 0, skipping namespace" on every host, 2026-12-07).
IMG = Path("/run/fpl")
LOCAL_HOSTNQN = "nqn.2026-01.lab.fence-pr:storage-reader"


def sh(*argv: str) -> str:
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"storage: {' '.join(argv)} -> {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def write(path: Path, value: str) -> None:
    path.write_text(value)


def setup(cfg: dict[str, Any]) -> dict[str, Any]:
    sh("modprobe", "-a", "target_core_mod", "iscsi_target_mod", "nvmet", "nvmet-tcp",
       "nvme-loop", "nvme-fabrics")
    for d in ("/etc/rtslib-fb-target/pr", "/etc/rtslib-fb-target/alua", "/etc/target/pr",
              "/etc/target/alua", "/var/target/pr", "/var/target/alua"):
        Path(d).mkdir(parents=True, exist_ok=True)
    if not Path("/sys/kernel/config/target").exists():
        sh("mount", "-t", "configfs", "configfs", "/sys/kernel/config")
    root = rts.RTSRoot()
    size = cfg["size_mb"] * 1024 * 1024
    sos = [rts.RDMCPStorageObject(f"lun{i}", size=size) for i in range(cfg["luns"])]
    target = rts.Target(rts.FabricModule("iscsi"), cfg["iqn"])
    tpg = rts.TPG(target, 1)
    tpg.set_attribute("authentication", "0")
    tluns = [rts.LUN(tpg, i, so) for i, so in enumerate(sos)]
    for addr in cfg["addrs"]:
        rts.NetworkPortal(tpg, addr, cfg["iscsi_port"])
    for iqn in cfg["initiators"]:  # explicit ACLs: each node its own I_T nexuses
        acl = rts.NodeACL(tpg, iqn)
        for tl in tluns:
            rts.MappedLUN(acl, tl.lun, tl)
    tpg.enable = True
    del root

    sub = NVMET / "subsystems" / cfg["nqn"]
    sub.mkdir()
    write(sub / "attr_allow_any_host", "1")
    ns = sub / "namespaces/1"
    ns.mkdir()
    IMG.mkdir(parents=True, exist_ok=True)
    img = IMG / "ns1.img"
    with open(img, "wb") as f:
        f.truncate(size)
    write(ns / "device_path", str(img))
    if not (ns / "resv_enable").exists():
        raise SystemExit("storage: this kernel's nvmet has no resv_enable: no NVMe reservations")
    write(ns / "resv_enable", "1")
    write(ns / "enable", "1")
    for i, addr in enumerate(cfg["addrs"], start=1):
        port = NVMET / "ports" / str(i)
        port.mkdir()
        for k, v in (("addr_trtype", "tcp"), ("addr_adrfam", "ipv4"), ("addr_traddr", addr),
                     ("addr_trsvcid", str(cfg["nvme_port"]))):
            write(port / k, v)
        (port / "subsystems" / cfg["nqn"]).symlink_to(sub)
    # A loop port the storage machine itself reads the namespace's registrants through.
    loop = NVMET / "ports" / str(len(cfg["addrs"]) + 1)
    loop.mkdir()
    write(loop / "addr_trtype", "loop")
    (loop / "subsystems" / cfg["nqn"]).symlink_to(sub)
    sh("nvme", "connect", "-t", "loop", "-n", cfg["nqn"], "--hostnqn", LOCAL_HOSTNQN)
    return {"luns": [so.wwn for so in sos], "nvme": local_ns(cfg["nqn"])}


def local_ns(nqn: str) -> str:
    """The storage machine's own block device for the namespace (over the loop port): the
    disk whose subsystem is `nqn`, once udev has its node in /dev (waited for a while)."""
    seen = []
    for _ in range(300):
        for d in sorted(glob.glob("/sys/block/nvme*n*")):
            sub = Path(d, "device/subsysnqn")
            if not sub.exists():
                sub = Path(d, "device/device/subsysnqn")
            if sub.exists() and sub.read_text().strip() == nqn:
                dev = "/dev/" + Path(d).name
                if Path(dev).exists():
                    return dev
                seen.append(dev)
        time.sleep(0.1)
    raise SystemExit(f"storage: no block device for {nqn} over the loop port (sysfs: "
                     f"{sorted(set(seen)) or 'none'}; /sys/block: "
                     f"{sorted(Path(d).name for d in glob.glob('/sys/block/*'))})")


REG = re.compile(r"Node: (?P<who>[^ ,]+)(?P<isid>,i,0x[0-9a-f]+)? Key: (?P<key>0x[0-9a-f]+)")


def keys(cfg: dict[str, Any]) -> dict[str, Any]:
    """What the targets hold: per LUN the registered (initiator, key) pairs and the
    reservation; for the namespace the registrants' host IDs and keys and the holder."""
    luns = {}
    for so in sorted(glob.glob("/sys/kernel/config/target/core/rd_mcp_*/lun*")):
        pr = Path(so) / "pr"
        regs = [{"initiator": m["who"], "isid": (m["isid"] or "").removeprefix(",i,"),
                 "key": int(m["key"], 16)}
                for m in REG.finditer((pr / "res_pr_registered_i_pts").read_text())]
        luns[Path(so).name] = {"registrations": regs,
                               "reservation": (pr / "res_pr_type").read_text().strip(),
                               "holder": (pr / "res_pr_holder_tg_port").read_text().strip()}
    rep = json.loads(sh("nvme", "resv-report", local_ns(cfg["nqn"]), "--eds", "-o", "json"))
    regs = rep.get("regctlext", [])
    nvme = {"registrations": [{"hostid": r.get("hostid"), "key": int(r.get("rkey", 0)),
                               "holds": r.get("rcsts", 0) & 1 == 1} for r in regs],
            "rtype": rep.get("rtype", 0)}
    return {"luns": luns, "nvme": nvme}


def targets(state: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Every iSCSI portal group and NVMe/TCP port off (sessions and controllers drop) or on."""
    on = state == "on"
    for tpg in rts.RTSRoot().tpgs:
        tpg.enable = on
    for i in range(1, len(cfg["addrs"]) + 1):
        link = NVMET / "ports" / str(i) / "subsystems" / cfg["nqn"]
        if on and not link.exists():
            link.symlink_to(NVMET / "subsystems" / cfg["nqn"])
        elif not on and link.is_symlink():
            link.unlink()
    return {"targets": state}


if __name__ == "__main__":
    cmd, arg = sys.argv[1], json.loads(sys.argv[-1])
    if cmd == "setup":
        out = setup(arg)
    elif cmd == "keys":
        out = keys(arg)
    elif cmd == "targets":
        out = targets(sys.argv[2], arg)
    else:
        raise SystemExit(f"storage: unknown command {cmd}")
    print(json.dumps(out))
