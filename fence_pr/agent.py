"""Pacemaker glue: options from fencing.py, a plan from them, the engine, exit codes.

Knows nothing about struct layouts or sysfs: it turns options into a `Plan`
(devices, keys, who is who) and reports the engine's `DeviceReport`s in the
words and exit codes Pacemaker expects (0 ok, 1 failure, 2 status OFF).
"""

from __future__ import annotations

import atexit
import io
import logging
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass

sys.path.append("/usr/share/fence")
from fencing import (
    all_opt,
    atexit_handler,
    check_input,
    fence_action,
    process_input,
    run_delay,
    show_docs,
)

from . import engine, multipathd
from .bounded import run_bounded
from .devices import DeviceRefused, Storage, resolve_all, shared_vg_devices
from .errors import PrError
from .keys import (
    CmapError,
    KeyCollision,
    KeyDerivationError,
    KeyFormatError,
    KeyScheme,
    check_unique,
    derive_key,
    format_key,
    load_cluster_info,
    parse_key,
    run_cmapctl,
)
from .lock import LockTimeout, node_lock
from .policies import Deadline
from .prtypes import PrType

EXIT_OK, EXIT_FAIL = 0, 1  # status OFF (2) comes from fencing.py's fence_action

DEVICE_OPT = ["no_login", "no_password", "devices", "nodename", "port", "no_port", "key",
              "key_value", "node_keys", "local_node", "reservation_type", "fabric_fencing",
              "on_target", "force_on", "corosync_cmap_path", "logfile", "separator"]

DOCS = {
    "shortdesc": "Fence agent for persistent reservations through linux/pr.h (SCSI, NVMe, "
                 "dm-multipath)",
    "longdesc": "fence_pr cuts a failed node off shared storage by removing its persistent "
                "reservation key with the kernel's linux/pr.h ioctls, which work for SCSI "
                "disks, NVMe namespaces and dm-multipath maps alike and need no CAP_SYS_RAWIO. "
                "Each node registers its own 64-bit key (on: unfencing, run by each node on "
                "itself) on every path of every device, and one node holds a Write Exclusive "
                "Registrants Only reservation; off preempts and aborts the victim's key. "
                "On multipath maps fence_pr registers each path itself, because the kernel's "
                "dm-multipath registration is all-or-nothing, and verifies every result by "
                "reading the keys back. Devices are handled in WWID order, the first one alone "
                "(the arbiter) and the rest in parallel.",
    "vendorurl": "https://www.kernel.org/doc/html/latest/block/pr.html",
}


def define_options() -> None:
    all_opt["devices"] = {
        "getopt": "d:", "longopt": "devices",
        "help": "-d, --devices=[devices]        Comma-separated list of devices: /dev/sdX, "
                "/dev/nvmeXnY, /dev/mapper/NAME, /dev/disk/by-id/... or a WWID",
        "required": "0",
        "shortdesc": "List of devices to use for the current operation. Without it, the "
                     "physical volumes of shared LVM volume groups are used.",
        "order": 1}
    all_opt["nodename"] = {
        "getopt": ":", "longopt": "nodename", "required": "0",
        "help": "--nodename=[nodename]          Name of the node to be fenced (as port/plug)",
        "shortdesc": "Name of the node to be fenced (same as port; Pacemaker sends both).",
        "order": 1}
    all_opt["key"] = {
        "getopt": "k:", "longopt": "key", "required": "0",
        "help": "-k, --key=[key]                Key of the target node (hex); overrides "
                "derivation",
        "shortdesc": "Reservation key of the node the operation applies to, in hex.",
        "order": 1}
    all_opt["key_value"] = {
        "getopt": ":", "longopt": "key_value", "required": "0",
        "help": "--key_value=<nodeid|id|hash>   How keys are derived from corosync: nodeid "
                "(default), or fence_scsi's id/hash",
        "shortdesc": "Key derivation: nodeid (cluster name hash + corosync node ID), or id / "
                     "hash for exactly fence_scsi's keys (migration).",
        "default": "nodeid", "choices": ["nodeid", "id", "hash"], "order": 1}
    all_opt["node_keys"] = {
        "getopt": ":", "longopt": "node_keys", "required": "0",
        "help": "--node_keys=[n1=k1,n2=k2]      Explicit per-node keys (no corosync needed)",
        "shortdesc": "Explicit keys for every node, as name=hexkey pairs separated by commas.",
        "order": 2}
    all_opt["local_node"] = {
        "getopt": ":", "longopt": "local_node", "required": "0",
        "help": "--local_node=[name]            This node's name (default: from corosync, "
                "else the host name)",
        "shortdesc": "Name of the node this agent runs on.",
        "order": 2}
    all_opt["reservation_type"] = {
        "getopt": ":", "longopt": "reservation_type", "required": "0",
        "help": "--reservation_type=[1-6]       pr.h reservation type (3: Write Exclusive "
                "Registrants Only)",
        "shortdesc": "Reservation type in linux/pr.h numbering; 3 is fence_scsi's SCSI "
                     "type 5.",
        "default": "3", "choices": ["1", "2", "3", "4", "5", "6"], "order": 2}
    all_opt["logfile"] = {
        "getopt": ":", "longopt": "logfile", "required": "0",
        "help": "-f, --logfile                  Log output (stdout and stderr) to file",
        "shortdesc": "Log output (stdout and stderr) to file", "order": 5}
    all_opt["corosync_cmap_path"] = {
        "getopt": ":", "longopt": "corosync-cmap-path", "required": "0",
        "help": "--corosync-cmap-path=[path]    Path to corosync-cmapctl binary",
        "shortdesc": "Path to corosync-cmapctl binary",
        "default": "/usr/sbin/corosync-cmapctl", "order": 200}


class Refused(Exception):
    """Bad input or an unsafe request; the message tells the admin what to do."""


@dataclass
class Plan:
    action: str
    devices: list[Storage]
    keys: dict[str, int]  # every known node -> key
    local: str
    target: str | None
    target_key: int | None
    pr_type: PrType
    deadline: Deadline

    @property
    def local_key(self) -> int:
        return self.keys[self.local]

    def name_of(self, key: int) -> str:
        return next((n for n, k in self.keys.items() if k == key), f"unknown-{format_key(key)}")


def _node_keys(options: dict[str, str]) -> tuple[dict[str, int], str | None]:
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
    cluster = load_cluster_info(lambda: run_cmapctl(path))
    # fencing.py upper-cases the value of every option that has "choices".
    scheme = KeyScheme(options.get("--key_value", "nodeid").lower())
    keys = {n.name: derive_key(scheme, cluster, n.name) for n in cluster.nodes if n.name}
    local = cluster.local()
    return keys, local.name if local else None


# Under pacemaker-fenced, fencing.py zeroes power_timeout (the fencer enforces its own
# timeout and kills the agent); fence_pr still bounds itself so a hung ioctl cannot keep
# the process past Pacemaker's default stonith-timeout.
FENCER_BUDGET_S = 60.0


def _budget(options: dict[str, str]) -> float:
    try:
        seconds = float(options.get("--power-timeout", "20"))
    except ValueError:
        raise Refused("power_timeout must be a number of seconds") from None
    return seconds if seconds > 0 else FENCER_BUDGET_S


def make_plan(options: dict[str, str]) -> Plan:
    """Everything is checked here, before any device is touched."""
    action = options["--action"]
    keys, corosync_local = _node_keys(options)
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
    budget = _budget(options)
    specs = [d.strip() for d in options.get("--devices", "").split(",") if d.strip()]
    if not specs:
        specs = shared_vg_devices()
    if not specs:
        raise Refused("no devices: set devices=, or use shared LVM volume groups")
    return Plan(action, resolve_all(specs), keys, local, target, target_key, pr_type,
                Deadline(budget))


def _report(reports: list[engine.DeviceReport]) -> bool:
    ok = True
    for r in reports:
        state = "ok" if r.ok and not r.degraded else ("DEGRADED" if r.ok else "FAILED")
        logging.info("%s: %s %s", r.storage, state, r.message)
        for d in r.degraded:
            logging.warning("%s: degraded: %s", r.storage.node, d)
        if not r.ok:
            logging.error("%s: %s", r.storage, r.message)
            ok = False
    return ok


def hand_key_to_multipathd(plan: Plan, reports: list[engine.DeviceReport]) -> None:
    """Where multipathd manages a map, it registers paths added later (the kernel never does)."""
    maps = {r.storage.node.removeprefix("/dev/mapper/"): r for r in reports
            if r.ok and r.storage.kind == "dm-multipath map"}
    for name in sorted(maps.keys() & multipathd.managed_maps()):
        try:
            multipathd.set_key(name, plan.local_key)
            logging.info("multipathd will register key %s on new paths of %s",
                         format_key(plan.local_key), name)
        except multipathd.MultipathdError as e:
            maps[name].degraded.append(f"multipathd cannot register later paths: {e}")
            logging.warning("%s: %s", name, e)


def _status(plan: Plan) -> str:
    key = plan.target_key
    assert key is not None
    reports = engine.run_all(plan.devices, lambda s: engine.keys_on(s, plan.deadline),
                             plan.deadline)
    if not all(r.ok for r in reports):
        _report(reports)
        raise Refused("status unknown: " + "; ".join(r.message for r in reports if not r.ok))
    return "on" if any(key in r.keys for r in reports) else "off"


def validate(plan: Plan) -> int:
    """Options already parsed and devices resolved; now read (never write) each device's
    keys, which proves it answers persistent-reservation commands."""
    reports = engine.run_all(plan.devices, lambda s: engine.keys_on(s, plan.deadline),
                             plan.deadline)
    if not _report(reports):
        return EXIT_FAIL
    print(f"validate-all: configuration is valid ({len(plan.devices)} device(s), "
          f"{len(plan.keys)} node key(s), this node is {plan.local})")
    return EXIT_OK


# A second run waits for the first at most this share of its budget, keeping the rest for
# its own work.
LOCK_WAIT_SHARE = 0.5


def run(plan: Plan) -> int:
    if plan.action in ("on", "off", "reboot"):
        with node_lock(plan.deadline.remaining() * LOCK_WAIT_SHARE):
            return _run(plan)
    return _run(plan)


def _run(plan: Plan) -> int:
    if plan.action == "monitor":
        reports = engine.run_all(plan.devices, lambda s: engine.check(
            s, plan.local_key, plan.deadline), plan.deadline)
        return EXIT_OK if _report(reports) and all(not r.degraded for r in reports) else EXIT_FAIL

    def get_power_status(_conn: object, options: dict[str, str]) -> str:
        if options["--action"] == "off":
            # fencing.py asks before `off`; engine.fence finds a victim already gone by
            # itself, so this read would only add a command per device.
            return "on"
        return _status(plan)

    def set_power_status(_conn: object, options: dict[str, str]) -> None:
        key = plan.target_key
        assert key is not None
        if options["--action"] == "on":
            reports = engine.run_all(plan.devices, lambda s: engine.register(
                s, key, plan.pr_type, plan.deadline), plan.deadline)
            hand_key_to_multipathd(plan, reports)
        else:
            reports = engine.run_all(plan.devices, lambda s: engine.fence(
                s, plan.local_key, key, plan.pr_type, plan.deadline), plan.deadline)
        if not _report(reports):
            raise Refused(f"{options['--action']} failed on " + ", ".join(
                r.storage.node for r in reports if not r.ok))

    def get_list(_conn: object, _options: dict[str, str]) -> dict[str, tuple[str, str]]:
        reports = engine.run_all(plan.devices, lambda s: engine.keys_on(s, plan.deadline),
                                 plan.deadline)
        found = {k for r in reports for k in r.keys}
        out = {n: (format_key(k), "on" if k in found else "off") for n, k in plan.keys.items()}
        for k in sorted(found - set(plan.keys.values())):
            out[plan.name_of(k)] = (format_key(k), "on")
        return out

    def sync_set_power_status(conn: object, options: dict[str, str]) -> bool:
        # The engine verifies every device by reading its keys back; fencing.py's own
        # check afterwards (status, power_wait) would only repeat that read.
        set_power_status(conn, options)
        return True

    # fence_action returns None for list/list-status.
    rc = fence_action(None, dict(OPTIONS), None, get_power_status, get_list,
                      sync_set_power_fn=sync_set_power_status)
    return int(rc or EXIT_OK)


OPTIONS: dict[str, str] = {}


def _valid_text() -> None:
    """Bytes that are not UTF-8 become U+FFFD before fencing.py sees them: it logs bad
    values to syslog, which cannot encode Python's surrogate escapes (a traceback).  The
    replaced value is then refused like any other unknown one."""
    sys.argv = [os.fsencode(a).decode("utf-8", "replace") for a in sys.argv]
    if isinstance(sys.stdin, io.TextIOWrapper):
        sys.stdin.reconfigure(errors="replace")


def main() -> None:
    _valid_text()
    atexit.register(atexit_handler)
    define_options()
    all_opt["port"]["help"] = "-n, --plug=[nodename]          Name of the node to be fenced"
    all_opt["port"]["shortdesc"] = "Name of the node to be fenced or unfenced."
    options = check_input(DEVICE_OPT, process_input(DEVICE_OPT), other_conditions=True)
    options["device_opt"] = [o for o in options["device_opt"] if o != "separator"] + [
        "separator"]
    show_docs(options, DOCS)
    if options.get("--logfile"):
        try:
            log = open(options["--logfile"], "a")  # noqa: SIM115 - lives as long as the process
        except OSError as e:
            print(f"Failed: cannot open logfile {options['--logfile']}: {e}", file=sys.stderr)
            sys.exit(EXIT_FAIL)
        sys.stdout = sys.stderr = log
    if options.get("--nodename") and not options.get("--plug"):
        options["--plug"] = options["--nodename"]
    run_delay(options)
    OPTIONS.clear()
    OPTIONS.update(options)
    sys.exit(_exit_code_of(lambda: _plan_and_run(options)))


# The child gives up at the deadline by itself; the parent allows it this much more
# before walking away from a command stuck in the kernel.
GRACE_S = 3.0


def _plan_and_run(options: dict[str, str]) -> int:
    plan = make_plan(options)
    work = validate if options["--action"] == "validate-all" else run
    return run_bounded(lambda: _exit_code_of(lambda: work(plan)),
                       plan.deadline.remaining() + GRACE_S, ", ".join(
                           s.node for s in plan.devices))


def _exit_code_of(fn: Callable[[], int]) -> int:
    """Every error as one logged line and exit 1: Pacemaker reads exit codes, admins read
    the line, nobody reads a traceback."""
    try:
        return fn()
    except (Refused, DeviceRefused, KeyFormatError, KeyCollision, KeyDerivationError,
            CmapError, PrError, LockTimeout) as e:
        logging.error("Failed: %s", e)
        return EXIT_FAIL
    except Exception as e:  # a bug must still give Pacemaker a plain failure
        logging.debug("unexpected error", exc_info=True)
        logging.error("Failed: internal error: %s: %s", type(e).__name__, e)
        return EXIT_FAIL


if __name__ == "__main__":
    main()
