"""libvirt runs fence_pr_helper as its `pr_helper` (qemu.conf) for a domain whose disk is a
dm-multipath map with `<reservations managed='yes'/>`, as README's "Pointing libvirt at
fence_pr_helper" says to set it up.

libvirt starts the helper itself, with its own command line (`-k SOCKET`, daemonized, its
own pidfile), before QEMU; QEMU's pr-manager-helper object connects and finishes the
handshake (QEMU does not start otherwise, and QMP's query-pr-managers says so); the helper
libvirt started serves PR commands on every path of the map, as nobody with no capability;
`virsh destroy` stops it.  The domain stays paused, with no guest OS: the PR commands come
from the lab's client on the socket libvirt chose (real QEMU sends them in
test_qemu_guests).  libvirtd runs in the lab guest with what a host without SELinux,
cgroups or systemd needs (qemu.conf below); `make qemu-guests` runs this file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fence_pr.helper import wire

from ..fixtures import pace
from ..fixtures.packaged import LAB_PREFIX, installed
from ..fixtures.peers import multipathd_hosting, paths_ready
from ..fixtures.prhelper import NOBODY, Client, device_nodes
from ..fixtures.topology import (
    group_access,
    scsi_clear,
    scsi_full_status,
    scsi_reservation_key,
    sh,
    wait_for,
)

pytestmark = pytest.mark.extra

CONF = Path("/etc/libvirt/qemu.conf")
LIBVIRT_SOCK = Path("/run/libvirt/libvirt-sock")
WRAPPER = Path("/run/fence_pr_helper-libvirt")
HELPER_LOG = Path("/run/fence_pr_helper-libvirt.log")
DOMAIN = "fence-pr-lab"
A = 0xA1A1
WE_RO = 5

# The lab guest has no SELinux/AppArmor, no cgroup hierarchy and no systemd: say so, and
# keep QEMU's output in a file rather than virtlogd (not running here).
QEMU_CONF = f"""\
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
namespaces = [ ]
cgroup_controllers = [ ]
stdio_handler = "file"
pr_helper = "{WRAPPER}"
"""

# README's two-line wrapper, with the lab's copy of the package in place of /usr/bin's.
WRAPPER_SH = f"""\
#!/bin/sh
export PYTHONPATH={LAB_PREFIX}/lib/python3/dist-packages
exec /usr/bin/python3 -m fence_pr.helper.main -u {NOBODY} -g disk -v "$@" 2>>{HELPER_LOG}
"""


def domain_xml(dev: str) -> str:
    return f"""\
<domain type='qemu'>
  <name>{DOMAIN}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='scsi' index='0' model='virtio-scsi'/>
    <disk type='block' device='lun'>
      <driver name='qemu' type='raw' cache='none'/>
      <source dev='{dev}'>
        <reservations managed='yes'/>
      </source>
      <target dev='sda' bus='scsi'/>
    </disk>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def virsh(*argv: str, nominal: float = 120) -> str:
    r = subprocess.run(["virsh", "-c", "qemu:///system", *argv], capture_output=True,
                       text=True, timeout=pace.scaled(nominal))
    assert r.returncode == 0, f"virsh {' '.join(argv)} -> {r.returncode}: {r.stderr.strip()}"
    return r.stdout


def helpers() -> dict[int, list[str]]:
    """Running fence_pr_helper processes: pid -> argv."""
    found = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                argv = (d / "cmdline").read_bytes().decode().rstrip("\0").split("\0")
            except OSError:
                continue
            if "fence_pr.helper.main" in argv:
                found[int(d.name)] = argv
    return found


@contextmanager
def libvirtd(tmp: Path) -> Iterator[None]:
    """libvirtd in the foreground with the lab's qemu.conf; its log on failure."""
    assert shutil.which("libvirtd") and shutil.which("virsh"), \
        "libvirtd or virsh not installed: `make qemu-guests` installs libvirt-daemon, " \
        "libvirt-daemon-driver-qemu and libvirt-clients"
    installed()
    # libvirt-daemon-system's postinst makes these (not installed: it would start libvirtd on
    # the host); without them the qemu driver's start fails ("Failed to parse user
    # 'libvirt-qemu'") although qemu.conf names root.
    if subprocess.run(["getent", "passwd", "libvirt-qemu"], capture_output=True).returncode:
        sh("useradd", "--system", "--no-create-home", "--user-group", "libvirt-qemu")
    if subprocess.run(["getent", "group", "kvm"], capture_output=True).returncode:
        sh("groupadd", "--system", "kvm")
    before = CONF.read_text() if CONF.exists() else None
    CONF.write_text(QEMU_CONF)
    WRAPPER.write_text(WRAPPER_SH)
    WRAPPER.chmod(0o755)
    log = tmp / "libvirtd.log"
    with log.open("w") as out:
        proc = subprocess.Popen(["libvirtd"], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "LIBVIRT_LOG_OUTPUTS": "3:stderr"})
    try:
        wait_for(lambda: LIBVIRT_SOCK.exists() or proc.poll() is not None,
                 f"libvirtd's socket {LIBVIRT_SOCK}")
        assert proc.poll() is None, f"libvirtd exited {proc.returncode}: {log.read_text()}"
        yield
    except Exception as e:
        helper_log = HELPER_LOG.read_text() if HELPER_LOG.exists() else "(none)"
        raise AssertionError(f"{e}\nlibvirtd's log:\n{log.read_text()[-3000:]}\n"
                             f"fence_pr_helper's log:\n{helper_log[-3000:]}") from e
    finally:
        subprocess.run(["virsh", "-c", "qemu:///system", "destroy", DOMAIN],
                       capture_output=True, timeout=pace.scaled(120))
        proc.terminate()
        proc.wait(pace.scaled(60))
        WRAPPER.unlink(missing_ok=True)
        if before is None:
            CONF.unlink(missing_ok=True)
        else:
            CONF.write_text(before)


def test_libvirt_starts_fence_pr_helper_as_its_pr_helper(clean_iscsi, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    lab = clean_iscsi
    dev = lab.maps[1][0]
    probe = lab.luns[0].paths[(2, 0)].dev
    xml = tmp_path / "domain.xml"
    xml.write_text(domain_xml(dev))
    # multipathd on the maps, as on a host that runs guests: QEMU's start asks the map
    # SG_GET_VERSION_NUM, which a lab map without a usable path answers with EIO.
    with multipathd_hosting(lab) as mpd, group_access(device_nodes(lab), "disk"), \
            libvirtd(tmp_path):
        paths_ready(mpd, [dev])
        assert helpers() == {}, helpers()
        t0 = time.monotonic()
        virsh("create", "--paused", str(xml), nominal=300)
        started = time.monotonic() - t0
        # libvirt started it, with its own command line; it dropped root at once.
        (pid, argv), = helpers().items()
        sock = Path(argv[argv.index("-k") + 1])
        status = Path(f"/proc/{pid}/status").read_text()
        assert "CapEff:\t0000000000000000" in status and f"Uid:\t{NOBODY}" in status, status
        # QEMU started only because its pr-manager-helper finished the handshake.
        managers = json.loads(virsh("qemu-monitor-command", DOMAIN,
                                    '{"execute":"query-pr-managers"}'))["return"]
        assert [m["connected"] for m in managers] == [True], managers
        c = Client(sock)
        try:
            got = c.out(dev, wire.OutAction.REGISTER_AND_IGNORE, sa_key=A)
            assert got.status == 0, got
            got = c.out(dev, wire.OutAction.RESERVE, key=A, scsi_type=WE_RO)
            assert got.status == 0, got
        finally:
            c.close()
        nexuses = {tid for key, tid in scsi_full_status(probe) if key == A}
        assert len(nexuses) == 2, scsi_full_status(probe)  # both paths of the map
        assert scsi_reservation_key(probe) == A
        virsh("destroy", DOMAIN)
        wait_for(lambda: not helpers(), "libvirt to stop the helper it started", 60)
        with capsys.disabled():
            print(f"\n[libvirt] domain created (paused) in {started:.1f}s; helper argv "
                  f"{argv[1:]}; pr managers {managers}; A on {len(nexuses)} nexuses",
                  flush=True)
    scsi_clear(probe)
