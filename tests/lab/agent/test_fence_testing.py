"""fence-agents' own scenario runner, tests/fence_testing.py, drives fence_pr on real LUNs.

fence_testing.py (fence-agents' tests/, not installed by any package) reads a device file
(the agent and its options, each with its long and short spelling) and an action file (a
sequence of actions and the exit codes they must give), and runs the sequence with the
options given on stdin, as short options ("getopt") and as long options ("longopt").  This
runs it from the source tree `make fence-agents-check` is given ($FENCE_PR_FENCE_AGENTS_SRC),
with its own list.cfg and status.cfg, and with power-on-off.cfg's sequence split where
fence_pr deliberately differs: `on` registers the paths of the host it runs on, so it runs
on node2 itself, and `off` is refused on the node it would fence, so it runs on node1.
After every `off` the target must show node2's key gone and node2's writes must get EBADE:
fence_testing.py checks exit codes only.

Two things of fence_testing.py's own are worked around, not changed: it is always run
verbose, because without it the command runs as `... &> /dev/null` through os.system,
which Debian's /bin/sh (dash) reads as "in the background", so every action "passes" with
0; and it answers with a printed line, so the line is what is checked.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from ..fixtures.agentrun import AGENT, NODE_KEYS, Node
from ..fixtures.topology import registered, writes

pytestmark = pytest.mark.extra

SRC = os.environ.get("FENCE_PR_FENCE_AGENTS_SRC", "")
METHODS = ("stdin", "getopt", "longopt")


def fence_testing() -> Path:
    """The tree's tests/ directory, or a failure that says how to give one."""
    tests = Path(SRC) / "tests"
    if not SRC or not (tests / "fence_testing.py").is_file():
        pytest.fail("fence-agents' tests/fence_testing.py not found (FENCE_PR_FENCE_AGENTS_SRC="
                    f"{SRC!r}): run `make fence-agents-check FENCE_AGENTS_SRC=<source tree>`")
    return tests


def device_file(path: Path, node: Node) -> Path:
    """`node`'s view of the LUNs as a fence_testing device file, plug node2."""
    path.write_text(
        f'name = "fence_pr on {node.name}"\n'
        f'agent = "{AGENT}"\n'
        "[options]\n"
        f'\tdevices = [ "{",".join(node.devices)}", "--devices", "-d" ]\n'
        f'\tnode_keys = [ "{NODE_KEYS}", "--node_keys" ]\n'
        f'\tlocal_node = [ "{node.name}", "--local_node" ]\n'
        '\tport = [ "node2", "--plug", "-n" ]\n')
    return path


def action_file(path: Path, *actions: tuple[str, str]) -> Path:
    body = ", ".join(f'{{ "command" : "{c}", "return_code" : "{rc}" }}' for c, rc in actions)
    path.write_text(f'name = "{path.stem}"\nactions = [ {body} ]\n')
    return path


def run(tests: Path, device: Path, actions: Path, method: str) -> None:
    """One fence_testing.test_action call, which must print its TEST PASSED line (a failure
    shows the commands it ran and what they printed)."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import fence_testing; "
            "fence_testing.test_action(sys.argv[2], sys.argv[3], sys.argv[4], verbose=True)")
    r = subprocess.run(["/usr/bin/python3", "-c", code, str(tests), str(device), str(actions),
                        method], capture_output=True, text=True, timeout=600, cwd=tests)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert f"TEST PASSED: {device} worked on {actions} ({method})" in out, out


def test_fence_testing_scenarios_in_every_option_method(clean_iscsi, tmp_path) -> None:  # type: ignore[no-untyped-def]
    tests = fence_testing()
    lab = clean_iscsi
    n1, n2 = Node("node1", lab.maps[1]), Node("node2", lab.maps[2])
    on_node1 = device_file(tmp_path / "node1.cfg", n1)
    on_node2 = device_file(tmp_path / "node2.cfg", n2)
    unfence = action_file(tmp_path / "unfence.cfg", ("on", "^0$"), ("status", "^0$"))
    fence = action_file(tmp_path / "fence.cfg", ("status", "^0$"), ("off", "^0$"),
                        ("status", "^2$"))
    r = n1.run("on", "node1")
    assert r.rc == 0, r  # node1, the survivor, stays registered throughout
    luns, devices = len(lab.luns), len(n2.devices)
    for method in METHODS:
        run(tests, on_node2, unfence, method)
        assert registered(lab.luns, n2.key) == [2] * luns, f"{method}: node2 not on every path"
        assert writes(lab.maps, n2.devices) == [0] * devices, f"{method}: node2 could not write"
        run(tests, on_node1, fence, method)
        assert registered(lab.luns, n2.key) == [0] * luns, f"{method}: node2's key survived"
        assert writes(lab.maps, n2.devices) == [errno.EBADE] * devices, \
            f"{method}: node2 still writes"
        run(tests, on_node1, tests / "actions.d/list.cfg", method)
        run(tests, on_node1, tests / "actions.d/status.cfg", method)
