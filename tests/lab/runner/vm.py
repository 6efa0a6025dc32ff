"""Boot a lab kernel in QEMU (TCG) over the host's own root and run one command.

The guest sees the host's / read-only (9p) under a tmpfs overlay, the checkout
read-write at the same path, and a transfer share through which the command,
its output and exit status travel.  One boot per command.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .kernels import CACHE, KERNELS, KernelSpec, kernel_release, vmlinuz

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parents[2]
INITRD_MODULES = ("netfs", "9pnet", "9pnet_virtio", "9p", "overlay")


@dataclass
class GuestResult:
    rc: int
    stdout: str
    stderr: str
    dmesg: str
    console: str
    ready_s: float | None  # guest uptime when stage 2 was ready
    wall_s: float  # host wall time, qemu start to exit


class LabError(RuntimeError):
    """The lab could not run: missing prerequisite or the guest died."""


def _module_path(root: Path, release: str, name: str) -> Path:
    moddir = root / "usr/lib/modules" / release
    for line in (moddir / "modules.dep").read_text().splitlines():
        path = line.split(":", 1)[0]
        base = Path(path).name.split(".ko", 1)[0]
        if base.replace("-", "_") == name.replace("-", "_"):
            return moddir / path
    raise LabError(f"module {name} not found in {moddir}")


def _is_dynamic(elf: Path) -> bool:
    """True when the ELF has a PT_INTERP header, i.e. needs a loader the initrd lacks."""
    import struct

    data = elf.read_bytes()
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return any(struct.unpack_from("<I", data, phoff + i * phentsize)[0] == 3 for i in range(phnum))


def build_initrd(spec: KernelSpec, init_script: Path = HERE / "guest/init") -> Path:
    """A busybox initramfs with the 9p/overlay modules and `init_script` as its /init (the
    machine lab has its own), cached by content."""
    release = kernel_release(spec)
    busybox = Path("/bin/busybox")
    init = init_script.read_bytes()
    digest = hashlib.sha256(init + release.encode() + busybox.read_bytes()[:4096]).hexdigest()
    out = CACHE / f"initrd-{release}-{digest[:12]}.cpio.gz"
    if out.exists():
        return out
    if not busybox.exists() or _is_dynamic(busybox):
        raise LabError("lab needs a static /bin/busybox (busybox-static): run `make setup`")
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for d in ("bin", "proc", "sys", "dev", "mods"):
            (t / d).mkdir()
        shutil.copy2(busybox, t / "bin/busybox")
        (t / "init").write_bytes(init)
        (t / "init").chmod(0o755)
        for name in INITRD_MODULES:
            src = _module_path(spec.root, release, name)
            data = src.read_bytes()
            if src.suffix == ".xz":
                data = lzma.decompress(data)
            elif src.suffix == ".zst":
                data = subprocess.run(["zstd", "-dc", str(src)], check=True,
                                      capture_output=True).stdout
            (t / "mods" / f"{name}.ko").write_bytes(data)
        # Both lanes of `make lab` may build it at once on a fresh machine: each writes its
        # own file, and the atomic replace leaves one whole initramfs either way.
        tmp_out = out.with_name(f"{out.name}.{os.getpid()}.tmp")
        with open(tmp_out, "wb") as f:
            find = subprocess.Popen(["find", "."], cwd=t, stdout=subprocess.PIPE)
            cpio = subprocess.Popen(["cpio", "-o", "-H", "newc", "--quiet"], cwd=t,
                                    stdin=find.stdout, stdout=subprocess.PIPE)
            subprocess.run(["gzip", "-1"], stdin=cpio.stdout, stdout=f, check=True)
            cpio.wait()
            find.wait()
        os.replace(tmp_out, out)
    return out


def _stream(path: Path, stop: threading.Event, sink: object) -> None:
    """Copy the guest's stdout to ours as it grows, so CI shows progress."""
    pos = 0
    while True:
        done = stop.is_set()
        if path.exists():
            with open(path, "rb") as f:
                f.seek(pos)
                chunk = f.read()
            if chunk:
                pos += len(chunk)
                sink.write(chunk.decode(errors="replace"))  # type: ignore[attr-defined]
                sink.flush()  # type: ignore[attr-defined]
        if done:
            return
        time.sleep(0.5)


def run(command: str, *, kernel: str = "7.3", memory_mb: int = 3072, timeout: float = 1800,
        stream: bool = False, env: dict[str, str] | None = None) -> GuestResult:
    """Boot `kernel`, run `command` with bash in the checkout, return what happened."""
    if shutil.which("qemu-system-x86_64") is None:
        raise LabError("lab needs qemu-system-x86_64: run `make setup`")
    spec = KERNELS[kernel]
    try:
        release = kernel_release(spec)
        kernel_image = vmlinuz(spec)
    except FileNotFoundError as e:
        raise LabError(f"{e}: run `make setup` (python -m tests.lab.runner.kernels)") from e
    initrd = build_initrd(spec)
    with tempfile.TemporaryDirectory(prefix="fence_pr-lab-") as tmp:
        xfer = Path(tmp)
        exports = "".join(f"export {k}={_shq(v)}\n" for k, v in (env or {}).items())
        (xfer / "cmd").write_text(exports + command + "\n")
        modules = spec.root / "usr/lib/modules" / release
        (xfer / "lab.env").write_text(
            f"LAB_PROJECT={PROJECT}\nLAB_RELEASE={release}\nLAB_MODULES={modules}\n"
            f"LAB_KERNEL={kernel}\n"
        )
        console = xfer / "console.log"
        argv = [
            "qemu-system-x86_64", "-accel", "tcg", "-smp", "1", "-m", str(memory_mb),
            "-cpu", "max", "-nographic", "-no-reboot", "-nodefaults",
            "-serial", f"file:{console}",
            "-kernel", str(kernel_image), "-initrd", str(initrd),
            "-append", "console=ttyS0 panic=-1 quiet loglevel=4 nokaslr mitigations=off "
                       "net.ifnames=0 nvme_core.multipath=N",
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,"
                       "multidevs=remap",
            "-virtfs", f"local,path={PROJECT},mount_tag=project,security_model=none,"
                       "multidevs=remap",
            "-virtfs", f"local,path={xfer},mount_tag=xfer,security_model=none",
        ]
        if env and env.get("LAB_NVME_MULTIPATH") == "Y":
            argv[argv.index("-append") + 1] = argv[argv.index("-append") + 1].replace(
                "nvme_core.multipath=N", "nvme_core.multipath=Y")
        stop = threading.Event()
        streamer = None
        if stream:
            streamer = threading.Thread(target=_stream, args=(xfer / "stdout", stop, sys.stdout),
                                        daemon=True)
            streamer.start()
        t0 = time.monotonic()
        try:
            subprocess.run(argv, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise LabError(f"lab guest did not finish within {timeout}s; console tail:\n"
                           + _tail(console)) from e
        finally:
            stop.set()
            if streamer:
                streamer.join()
        wall = time.monotonic() - t0

        def read(name: str) -> str:
            p = xfer / name
            return p.read_text(errors="replace") if p.exists() else ""

        if not (xfer / "rc").exists():
            raise LabError("lab guest exited without running the command; console tail:\n"
                           + _tail(console))
        ready = read("ready").strip()
        return GuestResult(rc=int(read("rc").strip() or 255), stdout=read("stdout"),
                           stderr=read("stderr"), dmesg=read("dmesg"), console=read("console.log"),
                           ready_s=float(ready) if ready else None, wall_s=wall)


def _shq(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def _tail(path: Path, n: int = 60) -> str:
    if not path.exists():
        return "(no console output)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="run a command in the lab guest")
    ap.add_argument("--kernel", default=os.environ.get("LAB_KERNEL", "7.3"), choices=KERNELS)
    ap.add_argument("command", nargs="+")
    a = ap.parse_args()
    r = run(" ".join(a.command), kernel=a.kernel, stream=True)
    sys.stderr.write(r.stderr)
    print(f"[lab] kernel {a.kernel}: ready {r.ready_s}s, wall {r.wall_s:.1f}s, rc {r.rc}",
          file=sys.stderr)
    sys.exit(r.rc)
