"""The machine lab's networks: bridges and taps inside a network namespace the lab creates.

Every QEMU process of a lab runs in that namespace and opens its taps there, so the
machines reach each other and nothing else: the namespace has no route out, and the host's
own interfaces are not in it.  A link going down (`set_link`) is how the lab cuts a
network: a partition of the cluster network, a storage NIC that flaps.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field


class NetError(RuntimeError):
    """A lab network could not be built."""


def _ip(*argv: str, netns: str | None = None) -> None:
    cmd = ["ip", *(["-n", netns] if netns else []), *argv]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise NetError(f"{' '.join(cmd)}: {r.stderr.strip()}")


@dataclass
class LabNet:
    """One namespace (fpl-<pid>), one bridge per network, one tap per machine NIC."""

    networks: tuple[str, ...]
    name: str = field(default_factory=lambda: f"fpl-{os.getpid()}")
    taps: dict[str, str] = field(default_factory=dict)  # tap -> network

    def create(self) -> None:
        _ip("netns", "add", self.name)
        _ip("link", "set", "lo", "up", netns=self.name)
        for net in self.networks:
            _ip("link", "add", f"br-{net}", "type", "bridge", netns=self.name)
            # No STP and no forwarding delay: a tap is usable the moment it is up.
            _ip("link", "set", f"br-{net}", "type", "bridge", "stp_state", "0",
                "forward_delay", "0", netns=self.name)
            _ip("link", "set", f"br-{net}", "up", netns=self.name)

    def tap(self, machine: str, net: str) -> str:
        """A tap for `machine`'s NIC on `net`, enslaved to that network's bridge."""
        if net not in self.networks:
            raise NetError(f"no lab network {net!r} (have {', '.join(self.networks)})")
        name = f"t-{machine}-{net}"[:15]
        if name not in self.taps:
            _ip("tuntap", "add", "dev", name, "mode", "tap", netns=self.name)
            _ip("link", "set", name, "master", f"br-{net}", netns=self.name)
            self.taps[name] = net
        _ip("link", "set", name, "up", netns=self.name)
        return name

    def set_link(self, tap: str, up: bool) -> None:
        """Carrier on or off for one machine NIC, as a pulled cable."""
        _ip("link", "set", tap, "up" if up else "down", netns=self.name)

    def exec_argv(self) -> list[str]:
        """The prefix that runs a command (QEMU) inside the lab's namespace."""
        return ["ip", "netns", "exec", self.name]

    def destroy(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)
