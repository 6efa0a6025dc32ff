"""The agent as fencing.py runs it: the option table, the metadata's text, the action
loop, then plan -> actions -> exit code.

Knows nothing about struct layouts or sysfs.  The plan and the engine (pyudev, tenacity)
are imported only once an action needs them.
"""

from __future__ import annotations

import atexit
import importlib
import io
import logging
import sys
import types
from collections.abc import Callable
from typing import Any

from .host.bounded import EXIT_FAIL, run_bounded
from .host.budget import Deadline


def _defer_pycurl() -> None:
    """fencing.py imports pycurl for the agents that speak HTTP; fence_pr never does.
    Loading libcurl initialises libldap, which resolves this host's name
    (ldap_pvt_get_fqdn): with a hostname that is not in /etc/hosts and the DNS server out
    of reach -- a node cut off by a partition, when fencing must not wait -- that is the
    resolver's timeout before the action starts.  A stand-in loads pycurl on first use."""
    if "pycurl" in sys.modules:
        return
    stand_in = types.ModuleType("pycurl", "pycurl, loaded on first use (fencing_agent.py)")

    def load(name: str) -> Any:
        if sys.modules.get("pycurl") is stand_in:
            del sys.modules["pycurl"]
        real = importlib.import_module("pycurl")
        stand_in.__dict__.update(real.__dict__)
        return getattr(real, name)

    stand_in.__dict__["__getattr__"] = load
    sys.modules["pycurl"] = stand_in


_defer_pycurl()
sys.path.append("/usr/share/fence")
import fencing  # noqa: E402  (/usr/share/fence is not on sys.path by itself)

DEVICE_OPT = ["no_login", "no_password", "devices", "nodename", "port", "no_port", "key",
              "key_value", "node_keys", "local_node", "reservation_type", "fabric_fencing",
              "on_target", "force_on", "corosync_cmap_path", "logfile", "vgs_path",
              # fence_scsi's and fence_mpath's own, so that their resources carry over as
              # they stand (COMPAT says what fence_pr does with each):
              "aptpl", "readonly", "suppress-errors", "sg_persist_path", "sg_turs_path",
              "mpath_register_method", "mpathpersist_path", "store_path", "sudo", "separator"]

# What fence_pr does instead of fence_scsi's or fence_mpath's meaning, said in one line
# when a resource sets the option (INFO; WARNING for validate-all and on, which an admin
# reads and which run once per node start, not every monitor).  Options whose meaning
# fence_pr keeps (vgs_path, corosync_cmap_path, key_value, devices...) are not here.
COMPAT = {
    "aptpl": "Every registration persists through power loss whatever this says: Linux sets "
             "APTPL on every SCSI REGISTER it sends through linux/pr.h (and CPTPL on NVMe)",
    "readonly": "fence_pr always sends PR IN on a descriptor opened read-only",
    "suppress-errors": "No effect; fence_scsi used it only in its watchdog check, and "
                       "fence_pr_check logs at levels of its own",
    "sg_persist_path": "Not used; fence_pr sends PR commands through linux/pr.h, not "
                       "sg_persist",
    "sg_turs_path": "Not used; fence_pr sends no TEST UNIT READY: a path that does not "
                    "answer a PR command is left for the next",
    "mpath_register_method": "fence_pr registers every path of a map itself (as 'multi' "
                             "does), with the same key; the map's own REGISTER ('single') "
                             "rolls every path back when one fails",
    "mpathpersist_path": "Not used; fence_pr registers every path of a map through "
                         "linux/pr.h, without mpathpersist or multipathd",
    "store_path": "Not used; fence_pr keeps no key files: keys come from node_keys, key or "
                  "corosync",
    "sudo": "Not used; fence_pr runs no other program for PR commands: it needs root, or "
            "write access to the devices and their paths",
    "sudo_path": "Not used, as use_sudo",
}

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
                "reading the keys back. off handles the devices in WWID order, the first one "
                "alone (the arbiter, so two nodes fencing each other cannot each win some) and "
                "the rest in parallel; every other action visits every device at once and "
                "reports each.",
    "vendorurl": "https://www.kernel.org/doc/html/latest/block/pr.html",
}


def define_options(all_opt: dict[str, dict[str, Any]]) -> None:
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
        "getopt": ":", "longopt": "key-value", "required": "0",
        "help": "--key-value=<nodeid|id|hash>   How keys are derived from corosync: nodeid "
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
    all_opt["vgs_path"] = {
        "getopt": ":", "longopt": "vgs-path", "required": "0",
        "help": "--vgs-path=[path]              Path to vgs binary",
        "shortdesc": "Path to vgs binary (shared volume groups, when devices is not set)",
        "default": "/sbin/vgs", "order": 200}
    _define_compat_options(all_opt)
    all_opt["corosync_cmap_path"] = {
        "getopt": ":", "longopt": "corosync-cmap-path", "required": "0",
        "help": "--corosync-cmap-path=[path]    Path to corosync-cmapctl binary",
        "shortdesc": "Path to corosync-cmapctl binary",
        "default": "/usr/sbin/corosync-cmapctl", "order": 200}


def _define_compat_options(all_opt: dict[str, dict[str, Any]]) -> None:
    """fence_scsi's and fence_mpath's options, spelled as they spell them (getopt, longopt,
    default), described by what fence_pr does with them."""
    def compat(name: str, getopt: str, longopt: str, help_: str, **more: Any) -> None:
        all_opt[name] = {"getopt": getopt, "longopt": longopt, "required": "0",
                         "help": help_, "shortdesc": COMPAT[name] + ".",
                         "order": 300, **more}

    for name in ("sudo", "sudo_path"):  # fencing.py's own, described by what fence_pr does
        all_opt[name]["shortdesc"] = COMPAT[name] + "."
    compat("aptpl", "a", "aptpl",
           "-a, --aptpl                    Accepted: registrations always persist (APTPL)")
    compat("readonly", "", "readonly",
           "--readonly                     Accepted: PR IN is always sent read-only")
    compat("suppress-errors", "", "suppress-errors",
           "--suppress-errors              Accepted for fence_scsi's resources; no effect")
    compat("sg_persist_path", ":", "sg_persist-path",
           "--sg_persist-path=[path]       Accepted for fence_scsi's resources; not used",
           default="/usr/bin/sg_persist")
    compat("sg_turs_path", ":", "sg_turs-path",
           "--sg_turs-path=[path]          Accepted for fence_scsi's resources; not used",
           default="/usr/bin/sg_turs")
    compat("mpath_register_method", ":", "mpath-register-method",
           "--mpath-register-method=[multi|single] Accepted: every path is registered",
           default="multi", choices=["multi", "single"])
    compat("mpathpersist_path", ":", "mpathpersist-path",
           "--mpathpersist-path=[path]     Accepted for fence_mpath's resources; not used",
           default="/usr/sbin/mpathpersist")
    compat("store_path", ":", "store-path",
           "--store-path=[path]            Accepted for fence_mpath's resources; not used",
           default="/var/run/cluster")


def _say_compat(given: dict[str, str], action: str) -> None:
    """One line for each fence_scsi/fence_mpath option the resource sets, saying what
    fence_pr does instead (see COMPAT)."""
    level = logging.WARNING if action in ("validate-all", "on") else logging.INFO
    for name, notice in COMPAT.items():
        value = given.get("--" + fencing.all_opt[name]["longopt"])
        if value is not None and value != "0":
            logging.getLogger().log(level, "%s: %s", name, notice)


def run(stdin: str | None = None) -> None:
    """fencing.py parses and checks the options, answers what docs.py did not, and runs the
    action loop; `stdin` is what agent.main() already read of it."""
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    atexit.register(fencing.atexit_handler)
    all_opt = fencing.all_opt
    define_options(all_opt)
    all_opt["port"]["help"] = "-n, --plug=[nodename]          Name of the node to be fenced"
    all_opt["port"]["shortdesc"] = "Name of the node to be fenced or unfenced."
    all_opt["delay"]["getopt"] = "H:"  # as fence_scsi spells it
    with _ParseErrors() as not_understood:
        given = fencing.process_input(DEVICE_OPT)
    try:
        options = fencing.check_input(DEVICE_OPT, given, other_conditions=True)
    finally:  # once check_input has set up fencing.py's handlers (or refused the input)
        not_understood.log()
    options["device_opt"] = [o for o in options["device_opt"] if o != "separator"] + [
        "separator"]
    fencing.show_docs(options, DOCS)
    _say_compat(given, options["--action"])
    if options.get("--logfile"):
        try:
            log = open(options["--logfile"], "a")  # noqa: SIM115 - lives as long as the process
        except OSError as e:
            print(f"Failed: cannot open logfile {options['--logfile']}: {e}", file=sys.stderr)
            sys.exit(EXIT_FAIL)
        sys.stdout = sys.stderr = log
    if options.get("--nodename") and not options.get("--plug"):
        options["--plug"] = options["--nodename"]
    fencing.run_delay(options)
    sys.exit(_exit_code_of(lambda: _bounded(options, fencing.fence_action)))


class _ParseErrors(logging.Handler):
    """fencing.py warns once per line of stdin it does not understand: pages of garbage
    would bury the one error that follows in Pacemaker's log.  Those warnings are held back
    while it parses, then said in one line: how many, and the first few, cut short.

    Being a handler also keeps `logging.warning` from installing a default one before
    fencing.py sets up its own (which printed every later line twice); anything else logged
    meanwhile goes out at once, plainly, as Python does without handlers."""

    SHOWN = 3
    WIDTH = 60

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno == logging.WARNING and message.startswith("Parse error:"):
            self.lines.append(message.removeprefix("Parse error:").strip()
                              .removeprefix("Ignoring unknown option ").strip())
        elif logging.lastResort is not None:
            logging.lastResort.handle(record)

    def __enter__(self) -> _ParseErrors:
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        logging.getLogger().removeHandler(self)
        if exc_type is not None:  # fencing.py refused the input: say it all now
            self.log()

    def log(self) -> None:
        if not self.lines:
            return
        shown = [line if len(line) <= self.WIDTH else line[:self.WIDTH - 3] + "..."
                 for line in self.lines[:self.SHOWN]]
        more = len(self.lines) - len(shown)
        # The logger's method, not logging.warning: that would install a default handler.
        logging.getLogger().warning(
            "%d line(s) of input not understood, ignored: %s%s", len(self.lines),
            "; ".join(shown), f"; and {more} more" if more else "")
        self.lines = []


def _bounded(options: dict[str, str], fence_action: Callable[..., Any]) -> int:
    """The budget first (power_timeout), then discovery and the action inside the bound."""
    from .plan import budget

    deadline = budget(options)
    what = options.get("--devices") or "the shared volume groups' devices"
    return run_bounded(lambda: _exit_code_of(lambda: _plan_and_run(options, deadline,
                                                                   fence_action)),
                       deadline, what)


def _plan_and_run(options: dict[str, str], deadline: Deadline,
                  fence_action: Callable[..., Any]) -> int:
    from . import actions
    from .plan import make_plan

    plan = make_plan(options, deadline)
    if options["--action"] == "validate-all":
        return actions.validate(plan)
    return actions.run(plan, options, fence_action)


def _exit_code_of(fn: Callable[[], int]) -> int:
    """The agent's one place that turns an error into a message and an exit code: every
    fence_pr error as one logged line and exit 1 (Pacemaker reads exit codes, admins read
    the line, nobody reads a traceback); anything else is a bug, said as such."""
    from .pr.errors import FencePrError

    try:
        return fn()
    except FencePrError as e:
        logging.error("Failed: %s", e)
        return EXIT_FAIL
    except Exception as e:  # a bug must still give Pacemaker a plain failure
        logging.debug("unexpected error", exc_info=True)
        logging.error("Failed: internal error: %s: %s", type(e).__name__, e)
        return EXIT_FAIL
