"""Device discovery without `devices`: the PVs of shared LVM volume groups, as fence_scsi does.

lvmlockd runs in test mode (-T: no dlm or sanlock daemon) so `vgcreate --shared` makes a
real lvmlockd VG on a lab LUN; a local VG on another LUN must not be picked up.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..fixtures.agentrun import KEYS, NODE_KEYS, agent_argv
from ..fixtures.topology import ScratchDisk, scsi_clear, scsi_keys


def lvm(*argv: str) -> str:
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"{argv}: {r.stdout}{r.stderr}"
    return r.stdout


@pytest.fixture
def shared_vg(lio, tmp_path, monkeypatch) -> Iterator[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(PV of a shared VG, PV of a local VG), seen by LVM through a config of their own."""
    disks = [ScratchDisk("vgshared", 16), ScratchDisk("vglocal", 16)]
    shared, local = disks[0].dev, disks[1].dev
    conf = tmp_path / "lvm"
    conf.mkdir()
    (conf / "lvm.conf").write_text(
        f'devices {{ filter = ["a|^{shared}$|", "a|^{local}$|", "r|.*|"] }}\n'
        "global { use_lvmlockd = 1 }\n")
    monkeypatch.setenv("LVM_SYSTEM_DIR", str(conf))
    Path("/run/lvm").mkdir(parents=True, exist_ok=True)
    lockd = subprocess.Popen(["lvmlockd", "-T", "-f", "-g", "dlm"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists("/run/lvm/lvmlockd.socket"):
            assert lockd.poll() is None and time.monotonic() < deadline, "lvmlockd did not start"
            time.sleep(0.2)
        lvm("pvcreate", shared, local)
        lvm("vgcreate", "--shared", "--lock-type", "dlm", "labshared", shared)
        lvm("vgcreate", "--config", "global/use_lvmlockd=0", "lablocal", local)
        yield shared, local
    finally:
        for vg in ("labshared", "lablocal"):
            subprocess.run(["vgremove", "-f", vg], capture_output=True, timeout=60)
        lockd.terminate()  # lvmlockd ignores SIGTERM while a lockspace is up
        try:
            lockd.wait(timeout=5)
        except subprocess.TimeoutExpired:
            lockd.kill()
            lockd.wait(timeout=30)
        for d in disks:
            scsi_clear(d.dev)
            d.delete()


@pytest.mark.extra  # `make lab-slow`: lvmlockd is kernel-independent and slow to start
def test_on_without_devices_uses_the_shared_vg(shared_vg) -> None:  # type: ignore[no-untyped-def]
    shared, local = shared_vg
    attrs = lvm("vgs", "--noheadings", "-o", "vg_name,vg_attr,vg_lock_type")
    assert "labshared" in attrs and "dlm" in attrs, attrs
    base = ["--node_keys", NODE_KEYS, "--local_node", "node1"]
    r = agent_argv("-o", "on", "-n", "node1", *base)
    assert r.rc == 0, r
    assert scsi_keys(shared) == [KEYS["node1"]], "the shared VG's PV is registered"
    assert scsi_keys(local) == [], "a local VG's PV is left alone"
    r = agent_argv("-o", "status", "-n", "node1", *base)
    assert r.rc == 0 and "ON" in r.out, r


@pytest.mark.extra  # `make lab-slow`: a refusal before any device is touched
def test_no_devices_and_no_shared_vg_is_refused(lio, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    conf = tmp_path / "lvm"
    conf.mkdir()
    (conf / "lvm.conf").write_text('devices { filter = ["r|.*|"] }\n')
    monkeypatch.setenv("LVM_SYSTEM_DIR", str(conf))
    r = agent_argv("-o", "on", "-n", "node1", "--node_keys", NODE_KEYS, "--local_node", "node1")
    assert r.rc == 1 and "no devices" in r.err and "Traceback" not in r.err, r
