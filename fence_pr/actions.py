"""A `Plan` carried out: the engine on every device, its reports in Pacemaker's words.

Exit codes as Pacemaker reads them: 0 ok, 1 failure, 2 status OFF (from fencing.py's
fence_action).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from . import engine
from .devices import Kind
from .host import multipathd
from .host.bounded import EXIT_FAIL
from .host.lock import node_lock
from .plan import Plan
from .pr.errors import ActionFailed

EXIT_OK = 0  # EXIT_FAIL is 1; status OFF (2) comes from fencing.py's fence_action


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
    key = plan.target_key
    assert key is not None
    reports = engine.run_all(plan.devices, lambda s: engine.keys_on(s, plan.deadline),
                             plan.deadline)
    if not all(r.ok for r in reports):
        _report(reports)
        raise ActionFailed("status unknown: "
                           + "; ".join(r.message for r in reports if not r.ok))
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


# fencing.py's fence_action: the agent hands it in, so this module does not need fencing.py.
ActionLoop = Callable[..., Any]


def run(plan: Plan, options: dict[str, str], action_loop: ActionLoop) -> int:
    """`options` are fencing.py's, handed back to its action loop."""
    if plan.action in ("on", "off", "reboot"):
        with node_lock(plan.deadline.remaining() * LOCK_WAIT_SHARE):
            return _run(plan, options, action_loop)
    return _run(plan, options, action_loop)


def _run(plan: Plan, options: dict[str, str], action_loop: ActionLoop) -> int:
    if plan.action == "monitor":
        reports = engine.run_all(plan.devices, lambda s: engine.check(
            s, plan.local_key, plan.deadline), plan.deadline)
        return EXIT_OK if _report(reports) and all(not r.degraded for r in reports) else EXIT_FAIL
    # The Plan is fencing.py's connection object: it hands it to each callback (as
    # fence_aws hands its boto3 client).  fence_action returns None for list/list-status.
    rc = action_loop(plan, dict(options), None, get_power_status, get_list,
                     sync_set_power_fn=sync_set_power_status)
    return int(rc or EXIT_OK)


# --- fencing.py's callbacks ------------------------------------------------------------------

def get_power_status(plan: Plan, options: dict[str, str]) -> str:
    if options["--action"] == "off":
        # fencing.py asks before `off`; engine.fence finds a victim already gone by itself,
        # so this read would only add a command per device.
        return "on"
    return _status(plan)


def set_power_status(plan: Plan, options: dict[str, str]) -> None:
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
        raise ActionFailed(f"{options['--action']} failed on " + ", ".join(
            r.storage.node for r in reports if not r.ok))


def sync_set_power_status(plan: Plan, options: dict[str, str]) -> bool:
    # The engine verifies every device by reading its keys back; fencing.py's own check
    # afterwards (status, power_wait) would only repeat that read.
    set_power_status(plan, options)
    return True


def get_list(plan: Plan, _options: dict[str, str]) -> dict[str, tuple[str, str]]:
    reports = engine.run_all(plan.devices, lambda s: engine.keys_on(s, plan.deadline),
                             plan.deadline)
    found = {k for r in reports for k in r.keys}
    out = {n: (str(k), "on" if k in found else "off") for n, k in plan.keys.items()}
    for k in sorted(found - set(plan.keys.values())):
        out[plan.name_of(k)] = (str(k), "on")
    return out
