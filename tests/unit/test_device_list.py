"""How the `devices` list becomes logical units: a fence_scsi list of raw paths carries over."""

from __future__ import annotations

import pytest

from fence_pr.devices import DevicePath, DeviceRefused, Kind, Storage, Transport, add_storage

WWID = "36001405aaaa"


def disk(node: str, wwid: str = WWID) -> Storage:
    return Storage(node, wwid, Transport.SCSI, Kind.SCSI_DISK, (DevicePath(node),))


def test_raw_paths_of_one_lu_are_one_lu_fenced_through_each() -> None:
    out: dict[str, Storage] = {}
    for node in ("/dev/sdb", "/dev/sdc"):
        add_storage(out, node, disk(node))
    add_storage(out, "/dev/sdd", disk("/dev/sdd", "36001405bbbb"))
    assert [p.node for p in out[WWID].paths] == ["/dev/sdb", "/dev/sdc"]
    assert out[WWID].node == "/dev/sdb" and len(out) == 2


@pytest.mark.parametrize("second", [
    disk("/dev/sdb"),  # the same path again (another name of it)
    Storage("/dev/mapper/mpatha", WWID, Transport.SCSI, Kind.MULTIPATH_MAP,
            (DevicePath("/dev/sdb"), DevicePath("/dev/sdc"))),
])
def test_any_other_second_naming_is_refused(second: Storage) -> None:
    out: dict[str, Storage] = {}
    add_storage(out, "/dev/sdb", disk("/dev/sdb"))
    with pytest.raises(DeviceRefused, match=r"same device .*name it once"):
        add_storage(out, "second", second)
    assert [p.node for p in out[WWID].paths] == ["/dev/sdb"]


def test_an_nvme_namespace_twice_is_refused() -> None:
    ns = Storage("/dev/nvme0n1", WWID, Transport.NVME, Kind.NVME_NAMESPACE,
                 (DevicePath("/dev/nvme0n1"),))
    out: dict[str, Storage] = {}
    add_storage(out, "/dev/nvme0n1", ns)
    with pytest.raises(DeviceRefused):
        add_storage(out, "/dev/nvme1n1", Storage("/dev/nvme1n1", WWID, Transport.NVME,
                                                Kind.NVME_NAMESPACE,
                                                (DevicePath("/dev/nvme1n1"),)))
