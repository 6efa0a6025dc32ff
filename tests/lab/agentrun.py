"""Drive the real fence_pr executable the way Pacemaker and an admin do."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .packaged import LAB_PREFIX

# As packaged, from the guest's own file system (packaged.py; conftest installs it).
AGENT = str(LAB_PREFIX / "sbin/fence_pr")
CHECK = str(Path(sys.executable).parent / "fence_pr_check")  # the watchdog hook, the venv's
KEYS = {"node1": 0xF00D000000000001, "node2": 0xF00D000000000002}
NODE_KEYS = ",".join(f"{n}=0x{k:x}" for n, k in KEYS.items())


@dataclass
class Result:
    rc: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"rc={self.rc}\nstdout:\n{self.out}\nstderr:\n{self.err}"


def agent_argv(*args: str, timeout: float = 120) -> Result:
    """An admin at a terminal: getopt options."""
    r = subprocess.run([AGENT, *args], capture_output=True, text=True, timeout=timeout)
    return Result(r.returncode, r.stdout, r.stderr)


def agent_stdin(params: dict[str, str], timeout: float = 120) -> Result:
    """pacemaker-fenced: empty argv, key=value lines on stdin, PCMK_service set."""
    text = "".join(f"{k}={v}\n" for k, v in params.items())
    env = dict(os.environ, PCMK_service="pacemaker-fenced")
    r = subprocess.run([AGENT], input=text, capture_output=True, text=True, env=env,
                       timeout=timeout)
    return Result(r.returncode, r.stdout, r.stderr)


@dataclass
class Node:
    """One cluster node in the guest: its name and the device names it sees."""

    name: str
    devices: list[str]

    @property
    def key(self) -> int:
        return KEYS[self.name]

    def run(self, action: str, target: str | None = None, *extra: str) -> Result:
        args = ["-o", action, "--devices", ",".join(self.devices), "--node_keys", NODE_KEYS,
                "--local_node", self.name]
        if target:
            args += ["-n", target]
        return agent_argv(*args, *extra)

    def pacemaker(self, action: str, target: str, **extra: str) -> Result:
        return agent_stdin({"action": action, "nodename": target, "port": target,
                            "devices": ",".join(self.devices), "node_keys": NODE_KEYS,
                            "local_node": self.name, **extra})
