"""A `Plan` carried out: the engine on every device, its reports in Pacemaker's words.

Exit codes as Pacemaker reads them: 0 ok, 1 failure, 2 status OFF (from fencing.py's
fence_action).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import engine
from .devices import Kind
from .host import multipathd
from .host.bounded import EXIT_FAIL
from .host.lock import node_lock
from .plan import Plan
from .pr.errors import ActionFailed

EXIT_OK = 0  # EXIT_FAIL is 1; status OFF (2) comes from fencing.py's fence_action


def _report(action: str, reports: list[engine.DeviceReport]) -> bool:
    """One line per device, then one per path or problem, in the devices' order (by WWID),
    then a one-line summary; True when no device failed."""
    counts = {"ok": 0, "degraded": 0, "failed": 0}
    for r in reports:
        state = "failed" if not r.ok else ("degraded" if r.degraded else "ok")
        counts[state] += 1
        level = {"ok": logging.INFO, "degraded": logging.WARNING, "failed": logging.ERROR}[state]
        logging.log(level, "%s: %s: %s", r.storage, state.upper(), r.message)
        for d in sorted(r.degraded):
            logging.warning("%s: degraded: %s", r.storage.node, d)
    worst = logging.INFO if counts["ok"] == len(reports) else logging.WARNING
    logging.log(worst, "%s: %d device(s): %d ok, %d degraded, %d failed", action,
                len(reports), counts["ok"], counts["degraded"], counts["failed"])
    return not counts["failed"]


def hand_key_to_multipathd(plan: Plan, reports: list[engine.DeviceReport]) -> None:
    """Where multipathd manages a map, it registers paths added later (the kernel never does)."""
    maps = {r.storage.node.removeprefix("/dev/mapper/"): r for r in reports
            if r.ok and r.storage.kind is Kind.MULTIPATH_MAP}
    for name in sorted(maps.keys() & multipathd.managed_maps(plan.deadline)):
        try:
            multipathd.set_key(name, plan.local_key, plan.deadline)
            logging.info("multipathd will register key %s on new paths of %s",
                         str(plan.local_key), name)
        except multipathd.MultipathdError as e:
            maps[name].degraded.append(f"multipathd cannot register later paths: {e}")
            logging.warning("%s: %s", name, e)


def _status(plan: Plan) -> str:
    """ON if the key is on any device that answered; OFF only when every device answered
    and none has it: a device that did not answer might be the one that has it."""
    key = plan.target_key
    assert key is not None
    reports = engine.keys_everywhere(plan.devices, plan.deadline)
    failed = [r for r in reports if not r.ok]
    if failed:
        _report("status", reports)
    if any(key in r.keys for r in reports if r.ok):
        return "on"
    if failed:
        raise ActionFailed(f"status of {plan.target} unknown: key {key} is on none of the "
                           f"devices that answered, and {len(failed)} did not: "
                           + "; ".join(f"{r.storage.node}: {r.message}" for r in failed))
    return "off"


def validate(plan: Plan) -> int:
    """Options already parsed and devices resolved; now read (never write) each device's
    keys, which proves it answers persistent-reservation commands."""
    reports = engine.keys_everywhere(plan.devices, plan.deadline)
    if not _report("validate-all", reports):
        return EXIT_FAIL
    print(f"validate-all: configuration is valid ({len(plan.devices)} device(s), "
          f"{len(plan.keys)} node key(s), this node is {plan.local})")
    return EXIT_OK


# A second run waits for the first at most this share of its budget, keeping the rest for
# its own work.
LOCK_WAIT_SHARE = 0.5


# fencing.py's fence_action: the agent hands it in, so this module does not need fencing.py.
ActionLoop = Callable[..., Any]


@dataclass
class Conn:
    """fencing.py's connection object for one run (as fence_aws hands over its boto3
    client): the plan, and the devices a callback could not read -- list and list-status
    print what the others show, and the run still exits 1."""

    plan: Plan
    unread: list[str] = field(default_factory=list)


def run(plan: Plan, options: dict[str, str], action_loop: ActionLoop) -> int:
    """`options` are fencing.py's, handed back to its action loop."""
    if plan.action in ("on", "off", "reboot"):
        with node_lock(plan.deadline.remaining() * LOCK_WAIT_SHARE):
            return _run(plan, options, action_loop)
    return _run(plan, options, action_loop)


def _run(plan: Plan, options: dict[str, str], action_loop: ActionLoop) -> int:
    if plan.action == "monitor":
        reports = engine.run_everywhere(plan.devices, lambda s: engine.check(
            s, plan.local_key, plan.deadline), plan.deadline)
        healthy = _report("monitor", reports) and all(not r.degraded for r in reports)
        return EXIT_OK if healthy else EXIT_FAIL
    conn = Conn(plan)
    # fence_action returns None for list/list-status.
    rc = int(action_loop(conn, dict(options), None, get_power_status, get_list,
                         sync_set_power_fn=sync_set_power_status) or EXIT_OK)
    if rc == EXIT_OK and conn.unread:
        logging.error("%s: not read: %s", plan.action, ", ".join(conn.unread))
        return EXIT_FAIL
    return rc


# --- fencing.py's callbacks ------------------------------------------------------------------

def get_power_status(conn: Conn, options: dict[str, str]) -> str:
    # fencing.py asks before `off` and `on`.  engine.fence finds a victim already gone by
    # itself, and `on` registers every path whatever the status (force_on) and reads the
    # keys back: the read would only add a command per device -- and before `on`, a device
    # that does not answer would stop it from registering the others.
    if options["--action"] == "off":
        return "on"
    if options["--action"] == "on":
        return "off"
    return _status(conn.plan)


def set_power_status(conn: Conn, options: dict[str, str]) -> None:
    plan, action = conn.plan, options["--action"]
    key = plan.target_key
    assert key is not None
    if action == "on":
        reports = engine.run_everywhere(plan.devices, lambda s: engine.register(
            s, key, plan.pr_type, plan.deadline), plan.deadline)
        hand_key_to_multipathd(plan, reports)
    else:  # off: the arbiter first (engine.run_with_arbiter)
        known = frozenset(plan.keys.values())
        reports = engine.run_with_arbiter(plan.devices, lambda s: engine.fence(
            s, plan.local_key, key, plan.pr_type, plan.deadline, known), plan.deadline)
    if not _report(action, reports):
        raise ActionFailed(f"{action} failed on " + ", ".join(
            r.storage.node for r in reports if not r.ok))


def sync_set_power_status(conn: Conn, options: dict[str, str]) -> bool:
    # The engine verifies every device by reading its keys back; fencing.py's own check
    # afterwards (status, power_wait) would only repeat that read.
    set_power_status(conn, options)
    return True


def get_list(conn: Conn, options: dict[str, str]) -> dict[str, tuple[str, str]]:
    plan = conn.plan
    reports = engine.keys_everywhere(plan.devices, plan.deadline)
    if any(not r.ok for r in reports):
        _report(options["--action"], reports)
        conn.unread += [r.storage.node for r in reports if not r.ok]
    found = {k for r in reports if r.ok for k in r.keys}
    out = {n: (str(k), "on" if k in found else "off") for n, k in plan.keys.items()}
    for k in sorted(found - set(plan.keys.values())):
        out[plan.name_of(k)] = (str(k), "on")
    return out
