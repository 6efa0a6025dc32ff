"""One machine of the machine lab: a QEMU guest with its own 7.3 kernel, booting a Debian
root (image.py) with systemd, reachable through a command channel on its transfer share.

A machine is started and killed like hardware: `boot()` powers it on (a fresh tmpfs overlay
over the read-only root, so nothing survives a power cycle but what the lab writes into
etc/), `power_loss()` kills its QEMU without warning.  Commands go through /xfer/q
(guest/agent.sh): the host renames <id>.sh in, the machine leaves <id>.out, <id>.err, <id>.rc.

Waits scale with the machine's measured pace (the lab's pace workload, timed inside the
machine): three TCG guests on two cores run several times slower than one alone, and a
wait that runs out says what was not there, with the console's tail.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from ..fixtures.pace import REFERENCE_S, WORKLOAD
from ..runner.kernels import KERNELS, kernel_release, vmlinuz
from ..runner.vm import LabError, build_initrd
from .config import Files, Link, mac
from .image import ROOTS
from .net import LabNet

HERE = Path(__file__).resolve().parent
T = TypeVar("T")


@dataclass
class Result:
    rc: int
    out: str
    err: str


class MachineError(LabError):
    """A lab machine did not boot, answer or finish a command in time."""


@dataclass
class Machine:
    name: str
    index: int
    image: str  # debian12 | debian13
    nets: tuple[str, ...]
    net: LabNet
    workdir: Path
    files: Files
    memory_mb: int = 1024
    kernel: str = "7.3"
    proc: subprocess.Popen[bytes] | None = None
    taps: dict[str, str] = field(default_factory=dict)  # lab network -> tap
    pace: float = 1.0  # this machine's slowdown against REFERENCE_S, at least 1
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def xfer(self) -> Path:
        return self.workdir / "xfer"

    @property
    def console(self) -> Path:
        return self.workdir / "console.log"

    def _prepare(self) -> None:
        """The transfer share as a fresh boot finds it: the machine's etc/ files, the command
        channel, no queued or finished commands."""
        if self.xfer.exists():
            shutil.rmtree(self.xfer)
        self.xfer.mkdir(mode=0o700, parents=True)
        spec = KERNELS[self.kernel]
        (self.xfer / "machine.env").write_text(
            f"LAB_RELEASE={kernel_release(spec)}\nLAB_MACHINE={self.name}\n")
        shutil.copy2(HERE / "guest/agent.sh", self.xfer / "agent.sh")
        (self.xfer / "q").mkdir()
        etc = self.xfer / "etc"
        for rel, content in self.files.items():
            path = etc / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Link):
                path.symlink_to(content.target)
            else:
                path.write_text(content)
                if rel.endswith(".sh"):
                    path.chmod(0o755)

    def boot(self) -> None:
        """Power on (the previous run's console is kept as console.log.1)."""
        if self.running():
            raise MachineError(f"{self.name} is already running")
        root = ROOTS / self.image
        if not (root / "sbin/init").exists() and not (root / "sbin/init").is_symlink():
            raise MachineError(f"no {self.image} root at {root}: run `make machines-setup` "
                               "(python -m tests.lab.machines.image)")
        self._prepare()
        if self.console.exists():
            self.console.replace(self.console.with_suffix(".log.1"))
        spec = KERNELS[self.kernel]
        release = kernel_release(spec)
        modules = spec.root / "usr/lib/modules" / release
        argv = [
            *self.net.exec_argv(),
            "qemu-system-x86_64", "-accel", "tcg", "-smp", "1", "-m", str(self.memory_mb),
            "-cpu", "max", "-nographic", "-no-reboot", "-nodefaults", "-name", self.name,
            "-serial", f"file:{self.console}",
            "-kernel", str(vmlinuz(spec)), "-initrd", str(build_initrd(spec, HERE / "guest/init")),
            "-append", "console=ttyS0 panic=-1 quiet loglevel=4 nokaslr mitigations=off "
                       "net.ifnames=0 nvme_core.multipath=Y systemd.show_status=0",
            "-virtfs", f"local,path={ROOTS / self.image},mount_tag=root,security_model=none,"
                       "readonly=on,multidevs=remap",
            "-virtfs", f"local,path={modules},mount_tag=modules,security_model=none,"
                       "readonly=on,multidevs=remap",
            "-virtfs", f"local,path={self.xfer},mount_tag=xfer,security_model=none",
        ]
        for i, net in enumerate(self.nets):
            tap = self.taps.setdefault(net, self.net.tap(self.name, net))
            argv += ["-netdev", f"tap,id=n{i},ifname={tap},script=no,downscript=no",
                     "-device", f"virtio-net-pci,netdev=n{i},mac={mac(self.index, i)},romfile="]
        with open(self.workdir / "qemu.err", "wb") as err:  # QEMU keeps its own copy
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def power_loss(self) -> None:
        """The machine's power cut: QEMU killed, nothing in the guest sees it coming."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def console_tail(self, n: int = 30) -> str:
        if not self.console.exists():
            return "(no console output)"
        return "\n".join(self.console.read_text(errors="replace").splitlines()[-n:])

    def _dead(self) -> str | None:
        if self.proc is None:
            return f"{self.name} is powered off"
        if self.proc.poll() is not None:
            err = (self.workdir / "qemu.err").read_text(errors="replace").strip()
            said = f": {err}" if err else ""
            return (f"{self.name}'s QEMU exited ({self.proc.returncode}){said}; "
                    f"console tail:\n{self.console_tail()}")
        return None

    def wait(self, pred: Callable[[], T | None], what: str, nominal: float,
             interval: float = 0.25) -> T:
        """pred()'s first true value, within `nominal` seconds times this machine's pace
        (measured again before giving up); fails at once when the machine died."""
        start = time.monotonic()
        remeasured = False
        while True:
            v = pred()
            if v:
                return v
            dead = self._dead()
            if dead:
                raise MachineError(f"lab: {dead}\n(while waiting for {what})")
            if time.monotonic() - start > nominal * self.pace:
                if not remeasured and self.agent_up():
                    remeasured = True
                    before = self.pace
                    self.measure_pace()
                    if self.pace > before:
                        continue
                raise MachineError(
                    f"lab: timed out after {nominal * self.pace:.0f}s ({nominal:.0f}s nominal, "
                    f"{self.name} pace x{self.pace:.2f}) waiting for {what}; {self.name}'s "
                    f"console tail:\n{self.console_tail()}")
            time.sleep(interval)

    def agent_up(self) -> bool:
        return (self.xfer / "agent-up").exists()

    def wait_up(self, nominal: float = 180) -> None:
        """Booted: the command channel answers and systemd has reached multi-user.target
        (addresses up, the machine's services started); then its pace is measured, on a
        machine no longer busy booting."""
        self.wait(self.agent_up, f"{self.name} to boot to its command channel", nominal)
        self.wait(lambda: self.run("systemctl is-active multi-user.target").out.strip()
                  == "active", f"{self.name} to reach multi-user.target", nominal)
        self.measure_pace()

    def measure_pace(self) -> float:
        """The lab's pace workload timed inside this machine, best of three."""
        r = self.run("TIMEFORMAT=%R; for i in 1 2 3; do { time python3 -S -c "
                     f"'{WORKLOAD}' >/dev/null; }} 2>&1; done", timeout=600, scaled=False)
        times = [float(x) for x in r.out.split() if x.replace(".", "", 1).isdigit()]
        if not times:
            raise MachineError(f"{self.name}: pace workload gave no time: {r.out!r} {r.err!r}")
        self.pace = max(1.0, min(times) / REFERENCE_S)
        return self.pace

    def start(self, script: str) -> Path:
        """Queue `script` (bash) on the machine; the path its results will carry."""
        qdir = self.xfer / "q"
        cid = f"{os.getpid()}-{next(self._ids)}"
        tmp = qdir / f"{cid}.tmp"
        tmp.write_text(script + "\n")
        tmp.rename(qdir / f"{cid}.sh")
        return qdir / cid

    def result(self, base: Path) -> Result | None:
        rc = base.with_suffix(".rc")
        if not rc.exists():
            return None

        def read(suffix: str) -> str:
            p = base.with_suffix(suffix)
            return p.read_text(errors="replace") if p.exists() else ""

        return Result(int(read(".rc").strip() or 255), read(".out"), read(".err"))

    def _await(self, base: Path, what: str, timeout: float) -> Result:
        """A result within `timeout` real seconds (for the pace measurement itself)."""
        limit = time.monotonic() + timeout
        while True:
            r = self.result(base)
            if r is not None:
                return r
            dead = self._dead()
            if dead or time.monotonic() > limit:
                raise MachineError(f"lab: {dead or f'timed out after {timeout:.0f}s'} "
                                   f"waiting for {what}")
            time.sleep(0.1)

    def run(self, script: str, timeout: float = 120, check: bool = False,
            scaled: bool = True) -> Result:
        """`script` run by bash as root on the machine; `timeout` is nominal (times the pace)
        unless `scaled` is false."""
        base = self.start(script)
        first = script.strip().splitlines()[0][:80] if script.strip() else script
        what = f"{self.name} to finish `{first}`"
        if scaled:
            r = self.wait(lambda: self.result(base), what, timeout, interval=0.1)
        else:
            r = self._await(base, what, timeout)
        if check and r.rc != 0:
            raise MachineError(f"{self.name}: `{first}` exited {r.rc}: {r.err.strip()[-2000:]}")
        return r
