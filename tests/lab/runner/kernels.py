"""Fetch and unpack the Debian kernels the lab boots, outside the tracked tree.

The mirror is read from this machine's own apt configuration so that no
registry host name lives in the repository.  apt runs with a private state
directory: the host's package database is never touched.
"""

from __future__ import annotations

import argparse
import fcntl
import glob
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("FENCE_PR_LAB_CACHE", Path.home() / ".cache" / "fence_pr-lab"))


@dataclass(frozen=True)
class KernelSpec:
    """One bootable kernel: which packages hold it and where it lands."""

    name: str  # "7.3" or "6.12"
    suite: str
    pattern: str  # regex over package names; the newest match is the fallback
    pinned: tuple[str, ...]  # exact packages when still published

    @property
    def root(self) -> Path:
        return CACHE / f"root-{self.name}"


KERNELS = {
    "7.3": KernelSpec(
        name="7.3",
        suite="trixie-backports",
        pattern=r"^linux-binary-unsigned-(7\.\d+\.\d+)\+deb13-amd64$",
        pinned=(
            "linux-binary-unsigned-7.3.4+deb13-amd64",
            "linux-modules-7.3.4+deb13-amd64",
            "linux-base-7.3.4+deb13-amd64",
        ),
    ),
    "6.12": KernelSpec(
        name="6.12",
        suite="trixie",
        pattern=r"^linux-image-(6\.12\.\d+)\+deb13-amd64-unsigned$",
        pinned=(),  # trixie moves its 6.12 point release; take the newest
    ),
}


def host_mirror() -> str:
    """The Debian mirror URI this machine's apt already uses."""
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for line in Path(path).read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    for path in ["/etc/apt/sources.list", *glob.glob("/etc/apt/sources.list.d/*.list")]:
        if not Path(path).exists():
            continue
        for line in Path(path).read_text().splitlines():
            fields = line.split()
            if fields[:1] == ["deb"] and "security" not in line:
                return next(f for f in fields[1:] if not f.startswith("["))
    raise SystemExit("lab: no Debian mirror found in /etc/apt; cannot fetch the lab kernel")


class PrivateApt:
    """apt-get/apt-cache with their own sources and state, for the trixie suites."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.conf = base / "apt.conf"

    def setup(self) -> None:
        mirror = host_mirror()
        for sub in ("etc/sources.list.d", "etc/preferences.d", "state/lists/partial",
                    "cache/archives/partial"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.base / "etc/sources.list").write_text(
            f"deb [trusted=yes] {mirror} trixie main\n"
            f"deb [trusted=yes] {mirror} trixie-backports main\n"
        )
        b = self.base
        self.conf.write_text(
            f'Dir::Etc::SourceList "{b}/etc/sources.list";\n'
            f'Dir::Etc::SourceParts "{b}/etc/sources.list.d";\n'
            f'Dir::Etc::Preferences "{b}/etc/preferences";\n'
            f'Dir::Etc::PreferencesParts "{b}/etc/preferences.d";\n'
            f'Dir::State "{b}/state";\nDir::State::status "/dev/null";\n'
            f'Dir::Cache "{b}/cache";\nAcquire::Languages "none";\n'
            'APT::Sandbox::User "root";\n'
        )
        self.run("apt-get", "update", "-q")

    def run(self, *argv: str, cwd: Path | None = None) -> str:
        env = dict(os.environ, APT_CONFIG=str(self.conf))
        out = subprocess.run(argv, env=env, cwd=cwd, check=True, text=True,
                             stdout=subprocess.PIPE)
        return out.stdout

    def available(self, pattern: str) -> list[str]:
        names = self.run("apt-cache", "pkgnames", "linux-").split()
        return [n for n in names if re.match(pattern, n)]


def _version_key(name: str, pattern: str) -> tuple[int, ...]:
    m = re.match(pattern, name)
    assert m
    return tuple(int(x) for x in m.group(1).split("."))


def kernel_release(spec: KernelSpec) -> str:
    mods = spec.root / "usr/lib/modules"
    releases = sorted(p.name for p in mods.iterdir()) if mods.is_dir() else []
    if not releases:
        raise FileNotFoundError(f"lab kernel {spec.name} is not unpacked under {spec.root}")
    return releases[-1]


def vmlinuz(spec: KernelSpec) -> Path:
    rel = kernel_release(spec)
    for cand in (spec.root / f"usr/lib/modules/{rel}/vmlinuz.unsigned",
                 spec.root / f"boot/vmlinuz-{rel}"):
        if cand.exists():
            return cand
    raise FileNotFoundError(f"no vmlinuz for {rel} under {spec.root}")


def fetch(spec: KernelSpec) -> str:
    """Download and unpack `spec` unless already there; return the kernel release."""
    stamp = spec.root / ".complete"
    if stamp.exists():
        return kernel_release(spec)
    apt = PrivateApt(CACHE / "apt")
    apt.setup()
    found = apt.available(spec.pattern)
    if not found:
        raise SystemExit(f"lab: no package matching {spec.pattern} in {spec.suite}")
    if spec.pinned and spec.pinned[0] in found:
        packages = list(spec.pinned)
    else:
        newest = max(found, key=lambda n: _version_key(n, spec.pattern))
        if spec.pinned:
            print(f"lab: pinned {spec.pinned[0]} is gone from {spec.suite}; "
                  f"using the newest: {newest}", file=sys.stderr)
        ver = re.match(spec.pattern, newest).group(1)  # type: ignore[union-attr]
        packages = [newest]
        if newest.startswith("linux-binary-unsigned"):
            packages += [f"linux-modules-{ver}+deb13-amd64", f"linux-base-{ver}+deb13-amd64"]
    debs = CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    apt.run("apt-get", "download", "-q", *packages, cwd=debs)
    if spec.root.exists():
        shutil.rmtree(spec.root)
    spec.root.mkdir(parents=True)
    for pkg in packages:
        (deb,) = debs.glob(f"{pkg}_*.deb")
        subprocess.run(["dpkg-deb", "-x", str(deb), str(spec.root)], check=True)
    rel = kernel_release(spec)
    # Debian 7.x ships no modules.dep; 6.12's image package does not either.
    subprocess.run(["depmod", "-b", str(spec.root / "usr"), rel], check=True)
    for deb in debs.glob("*.deb"):
        deb.unlink()
    stamp.write_text(rel + "\n")
    return rel


def cache_lock(name: str = ".lock") -> int:
    """Hold the cache for one `make setup` at a time: two checkouts on one machine (two CI
    jobs, or a demo beside a test run) share it, and one's unpack or clean-up of the .debs
    pulled the other's from under it (measured: "expected 1, got 0" at the glob).  `name`:
    a lock of its own for a part of the cache that takes long to build."""
    CACHE.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = CACHE / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    if os.fstat(fd).st_uid != os.getuid():
        raise SystemExit(f"lab: {path} is not owned by this user; remove it")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"lab: another run holds {path}; waiting for it", file=sys.stderr)
        fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("kernels", nargs="*", default=list(KERNELS))
    args = ap.parse_args()
    lock = cache_lock()
    try:
        for name in args.kernels:
            print(f"lab kernel {name}: {fetch(KERNELS[name])}")
    finally:
        os.close(lock)


if __name__ == "__main__":
    main()
