"""Shared LVM volume groups (clvm, lvmlockd): the devices fence_pr fences when devices= is
not given, found as fence_scsi finds them."""

from __future__ import annotations

from .tools import run_tool


def shared_vg_devices(vgs: str, timeout: float) -> list[str]:
    """Devices of shared LVM volume groups (clvm or lvmlockd), as fence_scsi finds them;
    `vgs` is the program (fence_scsi's vgs_path)."""
    try:
        out = run_tool([vgs, "--noheadings", "--separator", ":", "-o",
                        "vg_attr,vg_lock_type,pv_name"], timeout=timeout,
                       hint="name the devices in devices= instead").stdout
    except OSError:
        return []
    return parse_vgs(out)


def parse_vgs(text: str) -> list[str]:
    devs = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(":")]
        if len(parts) != 3:
            continue
        attr, lock_type, pv = parts
        clustered = len(attr) > 5 and attr[5] == "c"
        if (clustered or lock_type in ("dlm", "sanlock")) and pv not in devs:
            devs.append(pv)
    return devs
