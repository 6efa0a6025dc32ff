"""Options in, a `Plan` out: every check made before any device is touched.

Knows nothing about fencing.py beyond the option names it fills in, nor about struct layouts:
it resolves devices and keys and says who is who.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from .devices import Storage, resolve_all
from .host.budget import Deadline
from .host.corosync import load_cluster_info, run_cmapctl
from .host.lvm import shared_vg_devices
from .keys import KeyScheme, check_unique, derive_key, parse_key
from .pr.errors import FencePrError
from .pr.prtypes import Key, PrType


class Refused(FencePrError):
    """Bad input or an unsafe request; the message tells the admin what to do."""


@dataclass
class Plan:
    action: str
    devices: list[Storage]
    keys: dict[str, Key]  # every known node -> key
    local: str
    target: str | None
    target_key: Key | None
    pr_type: PrType
    deadline: Deadline

    @property
    def local_key(self) -> Key:
        return self.keys[self.local]

    def name_of(self, key: Key) -> str:
        return next((n for n, k in self.keys.items() if k == key), f"unknown-{key}")


def _node_keys(options: dict[str, str],
               deadline: Deadline) -> tuple[dict[str, Key], str | None]:
    text = options.get("--node_keys", "").strip()
    if text:
        keys = {}
        for pair in text.split(","):
            name, sep, key = pair.partition("=")
            if not sep or not name.strip():
                raise Refused(f"node_keys: {pair!r} is not name=hexkey")
            keys[name.strip()] = parse_key(key)
        return keys, None
    path = options.get("--corosync-cmap-path", "/usr/sbin/corosync-cmapctl")
    cluster = load_cluster_info(lambda: run_cmapctl(path, timeout=deadline.timeout_s()))
    # fencing.py upper-cases the value of every option that has "choices".
    scheme = KeyScheme(options.get("--key-value", "nodeid").lower())
    keys = {n.name: derive_key(scheme, cluster, n.name) for n in cluster.nodes if n.name}
    local = cluster.local()
    return keys, local.name if local else None


# Under pacemaker-fenced, fencing.py zeroes power_timeout (the fencer enforces its own
# timeout and kills the agent); fence_pr still bounds itself so a hung ioctl cannot keep
# the process past Pacemaker's default stonith-timeout.
FENCER_BUDGET_S = 60.0


def budget(options: dict[str, str]) -> Deadline:
    """The run's one budget, started now: the agent makes it before anything else."""
    try:
        seconds = float(options.get("--power-timeout", "20"))
    except ValueError:
        raise Refused("power_timeout must be a number of seconds") from None
    return Deadline(seconds if seconds > 0 else FENCER_BUDGET_S)


def make_plan(options: dict[str, str], deadline: Deadline) -> Plan:
    """Everything is checked here, before any device is touched; discovery spends from
    `deadline` like everything after it."""
    action = options["--action"]
    keys, corosync_local = _node_keys(options, deadline)
    check_unique(keys)
    local = options.get("--local_node") or corosync_local or socket.gethostname().split(".")[0]
    if local not in keys:
        raise Refused(f"this node ({local}) has no key: add it to node_keys or set local_node")
    target = options.get("--plug") or options.get("--nodename") or None
    if action == "on" and not target and not options.get("--key"):
        target = local  # unfencing by hand on the node itself
    target_key = parse_key(options["--key"]) if options.get("--key") else (
        keys.get(target) if target else None)
    if target and target_key is None:
        raise Refused(f"node {target!r} has no key: known nodes are {', '.join(sorted(keys))}")
    if action in ("on", "off", "status") and target_key is None:
        raise Refused("no target: give port/plug (or nodename), or key")
    # Not for validate-all: Pacemaker's validate (pcs --agent-validation, stonith_admin
    # --validate) names this node itself as the port; there is no victim to check.
    if action == "off" and (target == local or target_key == keys[local]):
        raise Refused(f"refusing to fence this node itself ({local}); run off from a survivor")
    if action == "on" and target not in (None, local) and target_key != keys[local]:
        raise Refused(f"`on` registers this host's paths, so it must run on {target} itself "
                      "(Pacemaker does this for unfencing)")
    try:
        pr_type = PrType(int(options.get("--reservation_type", "3")))
    except ValueError:
        raise Refused("reservation_type must be 1..6 (pr.h numbering)") from None
    specs = [d.strip() for d in options.get("--devices", "").split(",") if d.strip()]
    if not specs:
        specs = shared_vg_devices(options.get("--vgs-path", "/sbin/vgs"), deadline.timeout_s())
    if not specs:
        raise Refused("no devices: set devices=, or use shared LVM volume groups")
    return Plan(action, resolve_all(specs, deadline), keys, local, target, target_key,
                pr_type, deadline)
