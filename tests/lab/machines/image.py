"""Root filesystems for the machine lab (issue 15): one per Debian release, every cluster node
and the storage machine boot the same tree (their role comes from the kernel command line).

Built once by mmdebstrap from the Debian mirror this machine's apt uses, with the packages an
HA cluster node runs (corosync, Pacemaker, pcs, multipath-tools, open-iscsi, nvme-cli,
fence-agents) and what the storage machine needs (targetcli-fb; nvmet is configfs), then
fence_pr's .deb from `packaging/build-deb` installed with apt, as a user installs it.  The
tree is kept under the lab cache, owned by root and closed to others; a stamp names what it
was built from, so a changed package list or .deb builds it again.

    python -m tests.lab.machines.image [debian12|debian13 ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ..runner.kernels import CACHE, cache_lock, host_mirror
from ..runner.vm import PROJECT

SUITES = {"debian12": "bookworm", "debian13": "trixie"}
PACKAGES = (
    "systemd-sysv", "udev", "kmod", "iproute2", "iputils-ping", "procps", "less",
    "corosync", "pacemaker", "pacemaker-cli-utils", "pcs",
    "multipath-tools", "open-iscsi", "nvme-cli", "sg3-utils", "lvm2",
    "targetcli-fb", "python3-rtslib-fb",
)
# fence_scsi and fence_mpath beside fence_pr (which brings fencing.py itself).  Debian 13
# splits fence-agents per agent; its `fence-agents` takes every one, the cloud SDKs with
# them (a 2.1 GB root, 1.1 GB of it Azure's, measured).
FENCE_AGENTS = {"bookworm": ("fence-agents",),
                "trixie": ("fence-agents-scsi", "fence-agents-mpath")}
ROOTS = CACHE / "machines"


def build_deb(out: Path) -> Path:
    """fence_pr's .deb, as `make package` builds it."""
    r = subprocess.run([str(PROJECT / "packaging/build-deb"), str(out)], check=True,
                       capture_output=True, text=True)
    return Path(r.stdout.strip().splitlines()[-1])


def packages(suite: str) -> tuple[str, ...]:
    return PACKAGES + FENCE_AGENTS[suite]


def stamp_of(suite: str, deb: Path) -> str:
    h = hashlib.sha256(deb.read_bytes())
    return json.dumps({"suite": suite, "packages": packages(suite), "deb": h.hexdigest()})


def build(name: str, deb: Path) -> dict[str, object]:
    """The tree for `name` (debian12, debian13), unless the one there was built from the same
    inputs; what it took."""
    suite = SUITES[name]
    root = ROOTS / name
    stamp = ROOTS / f"{name}.stamp"
    want = stamp_of(suite, deb)
    if stamp.exists() and stamp.read_text() == want and root.is_dir():
        return {"image": name, "cached": True}
    ROOTS.mkdir(mode=0o700, parents=True, exist_ok=True)
    if root.exists():
        shutil.rmtree(root)
    t0 = time.monotonic()
    hook = ["--customize-hook", f"copy-in {deb} /tmp",
            "--customize-hook",
            f'chroot "$1" apt-get install -y -q --no-install-recommends /tmp/{deb.name}',
            "--customize-hook", f'chroot "$1" rm /tmp/{deb.name}']
    r = subprocess.run(["mmdebstrap", "--variant=minbase", "--include=" + ",".join(packages(suite)),
                        *hook, suite, str(root), f"deb {host_mirror()} {suite} main"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"machines: mmdebstrap {suite} failed:\n{r.stderr[-3000:]}")
    os.chmod(root, 0o700)
    size = int(subprocess.run(["du", "-sb", str(root)], capture_output=True, text=True,
                              check=True).stdout.split()[0])
    stamp.write_text(want)
    return {"image": name, "cached": False, "seconds": round(time.monotonic() - t0),
            "bytes": size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("images", nargs="*", default=list(SUITES), choices=list(SUITES))
    args = ap.parse_args()
    lock = cache_lock(".machines.lock")  # not setup's: a build takes many minutes
    try:
        with tempfile.TemporaryDirectory(prefix="fence_pr-machines-") as tmp:
            deb = build_deb(Path(tmp))
            for name in args.images:
                print(json.dumps(build(name, deb)), flush=True)
    finally:
        os.close(lock)


if __name__ == "__main__":
    main()
