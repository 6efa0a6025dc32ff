"""What a device name means: a SCSI disk, an NVMe namespace or a dm-multipath map.

Objects over pyudev/sysfs, in the manner of pyudev and rtslib: above this
module nobody handles sysfs paths, only `Storage` and its `DevicePath`s.  Nothing
here issues a persistent-reservation command.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import stat
from dataclasses import dataclass
from enum import Enum

import pyudev

from .host.budget import Deadline
from .host.dm import all_dm_path_states, dm_path_states
from .pr.errors import FencePrError

LOOP_MAJOR = 7


class DeviceRefused(FencePrError, ValueError):
    """The name does not denote a device fence_pr can use; the message says what to use."""


class Transport(Enum):
    SCSI = "scsi"
    NVME = "nvme"


class Kind(Enum):
    """What the admin named; the value is how messages say it."""

    SCSI_DISK = "scsi disk"
    NVME_NAMESPACE = "nvme namespace"
    MULTIPATH_MAP = "dm-multipath map"


@dataclass(frozen=True)
class DevicePath:
    """One way to a logical unit: the block device PR commands are sent through."""

    node: str
    disk_state: str = "running"  # the SCSI midlayer's view of the disk behind the path
    dm_failed: bool = False  # dm-multipath marked the path failed (its I/O failed once)
    # LIO's tcm_loop wedges on PREEMPT AND ABORT (see docs/kernel-behaviour.md).
    abort_unsafe: bool = False

    @property
    def disk_running(self) -> bool:
        return self.disk_state == "running"

    @property
    def usable(self) -> bool:
        return self.disk_running and not self.dm_failed

    @property
    def rank(self) -> int:
        """Try order: healthy, then dm-failed but running (PR goes to the disk, not via dm),
        then disks that are not running at all."""
        return 0 if self.usable else 1 if self.disk_running else 2

    @property
    def why_not(self) -> str:
        if not self.disk_running:
            return f"SCSI state {self.disk_state}"
        return "failed in the dm map" if self.dm_failed else ""


@dataclass(frozen=True)
class Storage:
    """A logical unit as the cluster shares it, identified by its WWID."""

    node: str  # what the admin named, resolved to /dev/...
    wwid: str
    transport: Transport
    kind: Kind
    paths: tuple[DevicePath, ...]

    @property
    def per_path_registration(self) -> bool:
        """SCSI registers an I_T nexus, so each path needs its own REGISTER; NVMe a host."""
        return self.transport is Transport.SCSI

    def paths_by_rank(self) -> list[DevicePath]:
        return sorted(self.paths, key=lambda p: p.rank)

    def __str__(self) -> str:
        return f"{self.node} ({self.kind.value} {self.wwid})"


# SCSI VPD page 0x83 designator types as sysfs spells them, and the one-digit prefix
# multipath and /dev/disk/by-id use for the same designator ("naa.6001405..." == "36001405...").
_DESIGNATOR_PREFIX = {"t10.": "1", "eui.": "2", "naa.": "3"}


def normalize_wwid(text: str) -> str:
    """One spelling per logical unit, so a map and its paths compare equal."""
    w = text.strip().lower().removeprefix("mpath-").removeprefix("scsi-").removeprefix("nvme-")
    for designator, digit in _DESIGNATOR_PREFIX.items():
        if w.startswith(designator):
            return digit + w[len(designator):]
    return w


def _wwid_of(dev: pyudev.Device) -> str:
    if dev.sys_name.startswith("dm-"):
        # A map is the logical unit its paths reach: take the paths' identity, not the map
        # uuid (whose spelling multipath chooses).
        live, _ = _slaves(dev)
        if live:
            return _wwid_of(live[0])
        return normalize_wwid(str(dev.attributes.asstring("dm/uuid")))
    for attr in ("device/wwid", "wwid"):
        try:
            return normalize_wwid(str(dev.attributes.asstring(attr)))
        except KeyError:
            continue
    return ""


def _slaves(dev: pyudev.Device) -> tuple[list[pyudev.Device], list[str]]:
    """A map's path devices that still exist, and the names of those already gone: a path
    removed (iSCSI logout, hot unplug) can linger in slaves/ until dm lets go of it."""
    live, gone = [], []
    try:
        names = sorted(os.listdir(os.path.join(dev.sys_path, "slaves")))
    except OSError:
        names = []
    for name in names:
        try:
            live.append(pyudev.Devices.from_name(dev.context, "block", name))
        except pyudev.DeviceNotFoundError:
            gone.append(name)
    return live, gone


def _scsi_path(dev: pyudev.Device) -> DevicePath:
    node = str(dev.device_node)
    try:
        state = str(dev.attributes.asstring("device/state")).strip()
    except KeyError:
        state = "running"
    host = dev.find_parent("scsi", "scsi_host")
    proc_name = _proc_name(host.sys_path, host.sys_name) if host is not None else ""
    return DevicePath(node, disk_state=state, abort_unsafe=proc_name.startswith("tcm_loop"))


@functools.cache
def _proc_name(host_path: str, host_name: str) -> str:
    """The SCSI host's driver name; once per host, not once per path (256 LUNs, 2 hosts)."""
    try:
        with open(os.path.join(host_path, "scsi_host", host_name, "proc_name")) as f:
            return f.read().strip()
    except OSError:
        return ""


def _multipath(dev: pyudev.Device, lookups: _Lookups) -> Storage:
    name = str(dev.attributes.asstring("dm/name")).strip()
    states = lookups.dm_states_of(name)
    paths = []
    live, gone = _slaves(dev)
    for sd in live:
        p = _scsi_path(sd)
        majmin = f"{os.major(sd.device_number)}:{os.minor(sd.device_number)}"
        paths.append(dataclasses.replace(p, dm_failed=states.get(majmin) == "F"))
    if not paths:
        why = f"its path devices are gone ({', '.join(gone)})" if gone else "it has no paths"
        raise DeviceRefused(f"/dev/mapper/{name}: multipath map cannot be reached: "
                            f"{why}. Restore a path (iSCSI login, cabling), then retry")
    return Storage(f"/dev/mapper/{name}", _wwid_of(dev), Transport.SCSI, Kind.MULTIPATH_MAP,
                   tuple(paths))


def _classify(dev: pyudev.Device, named: str, lookups: _Lookups) -> Storage:
    node = str(dev.device_node)
    if dev.device_type == "partition":
        parent = dev.find_parent("block", "disk")
        whole = parent.device_node if parent is not None else "the whole disk"
        raise DeviceRefused(f"{named} is a partition: persistent reservations apply to the "
                            f"whole disk; use {whole}")
    if os.major(dev.device_number) == LOOP_MAJOR:
        raise DeviceRefused(f"{named} is a loop device, which has no persistent reservations: "
                            "name the shared SCSI disk, NVMe namespace or multipath map")
    name = dev.sys_name
    if name.startswith("dm-"):
        uuid = str(dev.attributes.asstring("dm/uuid")).strip()
        if not uuid.startswith("mpath-"):
            raise DeviceRefused(f"{named} is a device-mapper device that is not a multipath map "
                                f"(uuid {uuid or 'none'}): name the multipath map or the disk "
                                "beneath it")
        return _multipath(dev, lookups)
    if re.fullmatch(r"nvme\d+n\d+", name):
        return Storage(node, _wwid_of(dev), Transport.NVME, Kind.NVME_NAMESPACE,
                       (DevicePath(node),))
    if dev.find_parent("scsi", "scsi_device") is not None and re.fullmatch(r"sd[a-z]+", name):
        return Storage(node, _wwid_of(dev), Transport.SCSI, Kind.SCSI_DISK, (_scsi_path(dev),))
    raise DeviceRefused(f"{named} ({name}) has no persistent reservation support: fence_pr "
                        "needs a SCSI disk, an NVMe namespace or a dm-multipath map")


def _wwid_index(context: pyudev.Context) -> dict[str, list[pyudev.Device]]:
    """WWID -> whole-disk block devices with it: one udev enumeration for every WWID spec."""
    index: dict[str, list[pyudev.Device]] = {}
    for dev in context.list_devices(subsystem="block", DEVTYPE="disk"):
        index.setdefault(_wwid_of(dev), []).append(dev)
    return index


def _by_wwid(wwid: str, index: dict[str, list[pyudev.Device]]) -> pyudev.Device:
    want = normalize_wwid(wwid)
    found = index.get(want, [])
    if not found:
        raise DeviceRefused(f"no block device has WWID {wwid}")
    # A map covers its paths: prefer it over any one of them.
    return next((d for d in found if d.sys_name.startswith("dm-")), found[0])


class _Lookups:
    """What resolving many devices shares: built on first use, at most once per agent run."""

    def __init__(self, context: pyudev.Context, deadline: Deadline) -> None:
        self.context = context
        self.deadline = deadline
        self._wwids: dict[str, list[pyudev.Device]] | None = None
        self._dm: dict[str, dict[str, str]] | None = None

    def wwids(self) -> dict[str, list[pyudev.Device]]:
        if self._wwids is None:
            self._wwids = _wwid_index(self.context)
        return self._wwids

    def dm_states_of(self, map_name: str) -> dict[str, str]:
        """dm's path states of one map: from one `dmsetup status` of every map, asked again
        for this map alone if it appeared since (each within what is left of the budget)."""
        if self._dm is None:
            self._dm = all_dm_path_states(self.deadline.timeout_s())
        if map_name not in self._dm:
            self._dm[map_name] = dm_path_states(map_name, self.deadline.timeout_s())
        return self._dm[map_name]


def resolve(spec: str, lookups: _Lookups) -> Storage:
    """Turn what the admin wrote (/dev/..., /dev/disk/by-id/..., or a WWID) into Storage."""
    if not spec.startswith("/"):
        dev = _by_wwid(spec, lookups.wwids())
        return _classify(dev, spec, lookups)
    try:
        real = os.path.realpath(spec, strict=True)
        st = os.stat(real)
    except (OSError, RuntimeError) as e:
        raise DeviceRefused(f"{spec}: {getattr(e, 'strerror', None) or e}") from None
    return _by_stat(st, spec, lookups)


def _by_stat(st: os.stat_result, named: str, lookups: _Lookups) -> Storage:
    if not stat.S_ISBLK(st.st_mode):
        raise DeviceRefused(f"{named} is not a block device")
    try:
        dev = pyudev.Devices.from_device_number(lookups.context, "block", st.st_rdev)
    except pyudev.DeviceNotFoundByNumberError:
        raise DeviceRefused(f"{named}: the kernel has no block device {os.major(st.st_rdev)}:"
                            f"{os.minor(st.st_rdev)}") from None
    return _classify(dev, named, lookups)


def resolve_fd(fd: int, deadline: Deadline) -> Storage:
    """The LU behind an open descriptor (QEMU hands the helper one per command): by its
    device number, so no name is looked up that could since point elsewhere."""
    try:
        st = os.fstat(fd)
    except OSError as e:
        raise DeviceRefused(f"descriptor {fd}: {e.strerror}") from None
    return _by_stat(st, f"descriptor {fd}", _Lookups(pyudev.Context(), deadline))


def resolve_all(specs: list[str], deadline: Deadline) -> list[Storage]:
    """Resolve every device, refusing duplicates, in the order fencing must use (by WWID).

    The same order on every node makes the first device an arbiter: two nodes
    fencing each other race for it first, so they cannot each win a subset.
    """
    lookups = _Lookups(pyudev.Context(), deadline)
    out: dict[str, Storage] = {}
    for spec in specs:
        add_storage(out, spec, resolve(spec, lookups))
    return [out[w] for w in sorted(out)]


def add_storage(out: dict[str, Storage], spec: str, s: Storage) -> None:
    """Add `s` (resolved from `spec`) to `out`, by WWID.

    Several raw SCSI paths of one LU are one LU fenced through each of them: fence_scsi's
    `devices` lists them so (one /dev/sdX per path), and such a list must carry over.  Any
    other second naming (the same path again, a map and one of its paths, an NVMe
    namespace twice) is a mistake in the list and refused."""
    prev = out.get(s.wwid)
    if prev is None:
        out[s.wwid] = s
        return
    seen = {p.node for p in prev.paths}
    if (prev.kind is Kind.SCSI_DISK and s.kind is Kind.SCSI_DISK
            and not seen & {p.node for p in s.paths}):
        out[s.wwid] = dataclasses.replace(prev, paths=prev.paths + s.paths)
        return
    raise DeviceRefused(f"{spec} and {prev.node} are the same device (WWID {s.wwid}); "
                        "name it once")
