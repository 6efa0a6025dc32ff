"""fence_pr_check: the watchdog daemon's test script (like fence_scsi_check).

The watchdog daemon runs every executable in its test directory
(/etc/watchdog.d) with the argument `test`, and `repair <code>` when a test
failed.  This check passes only while this node's key is registered on ALL of
its devices: a node that was fenced, even from one device, fails it and the
watchdog reboots it before it can write anywhere else.

Exit codes (documented for watchdog(8)): 0 registered everywhere; 1 the key is
missing on some device, or a device could not be read; 2 configuration error
(nothing can be checked, so the node is treated as unhealthy by the daemon).
`repair` always exits 1: a fenced node must be rebooted, not repaired.

Configuration: key=value lines, the same names as the agent's stdin
(devices=, node_keys=, local_node=, key_value=, corosync_cmap_path=), read
from $FENCE_PR_CHECK_CONF, else /etc/sysconfig/fence_pr, else
/etc/default/fence_pr.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .host.budget import Deadline

CHECK_OK, CHECK_FENCED, CHECK_CONFIG = 0, 1, 2
CONFIG_PATHS = ("/etc/sysconfig/fence_pr", "/etc/default/fence_pr")


def parse_config(text: str) -> dict[str, str]:
    """key=value lines (shell-style comments allowed) as the agent's `--option` names."""
    options = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        options["--" + key.strip().replace("-", "_")] = value.strip().strip("\"'")
    # fencing.py's long option names, as the agent reads them
    for name in ("corosync_cmap_path", "power_timeout", "key_value", "vgs_path"):
        if f"--{name}" in options:
            options["--" + name.replace("_", "-")] = options.pop(f"--{name}")
    return options


def config_text() -> str | None:
    for path in ([os.environ["FENCE_PR_CHECK_CONF"]] if "FENCE_PR_CHECK_CONF" in os.environ
                 else CONFIG_PATHS):
        if Path(path).is_file():
            return Path(path).read_text()
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["repair"]:
        return CHECK_FENCED
    # Imported here so `repair` and configuration errors cost nothing.
    from .host.bounded import run_bounded
    from .plan import Refused, budget

    text = config_text()
    if text is None:
        print("fence_pr_check: no configuration (set FENCE_PR_CHECK_CONF or write "
              f"{CONFIG_PATHS[0]})", file=sys.stderr)
        return CHECK_CONFIG
    options = parse_config(text) | {"--action": "monitor"}
    try:
        deadline = budget(options)
    except Refused as e:
        print(f"fence_pr_check: configuration error: {e}", file=sys.stderr)
        return CHECK_CONFIG
    # The agent's own hard bound: a read stuck in the kernel (an iSCSI session in
    # recovery) must not hang the watchdog's test.  Past it, exit 1: unverifiable.
    return run_bounded(lambda: _check(options, deadline), deadline,
                       options.get("--devices") or "the shared volume groups' devices")


def _check(options: dict[str, str], deadline: Deadline) -> int:
    from . import engine
    from .plan import make_plan
    from .pr.errors import FencePrError

    try:
        plan = make_plan(options, deadline)
    except FencePrError as e:  # before any device is read: the configuration's
        print(f"fence_pr_check: configuration error: {e}", file=sys.stderr)
        return CHECK_CONFIG
    reports = engine.keys_everywhere(plan.devices, plan.deadline)
    missing = [r.storage.node for r in reports if r.ok and plan.local_key not in r.keys]
    problems = [f"key of {plan.local} missing on {', '.join(missing)}"] if missing else []
    problems += [f"{r.storage.node} unreadable ({r.message})" for r in reports if not r.ok]
    if problems:
        print(f"fence_pr_check: {'; '.join(problems)}: this node has been fenced or has lost "
              "its shared storage", file=sys.stderr)
        return CHECK_FENCED
    return CHECK_OK


if __name__ == "__main__":
    sys.exit(main())
