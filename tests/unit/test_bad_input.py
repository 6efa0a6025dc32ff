"""Hostile input never gives a traceback or an undocumented exit code (FENCE_PR_BAD_INPUTS
cases: 150 in CI, 10,000 in `make reliability`).  The lab re-runs a sample against real
LUNs and checks that no registration or PR generation moved (tests/lab/agent/test_bad_input.py)."""

from __future__ import annotations

import os
import subprocess
import tempfile

from hypothesis import HealthCheck, given, settings

from tests.badinput import AGENT, Case, cases, check, symlink_loop

N = int(os.environ.get("FENCE_PR_BAD_INPUTS", "150"))
# Removed when the test process ends (TemporaryDirectory's finalizer); the strategy below
# needs the path when the module is imported.
_LOOP_DIR = tempfile.TemporaryDirectory(prefix="fence_pr-badinput-")
LOOP = symlink_loop(_LOOP_DIR.name)
# No real disk on this host may ever be named: the devices are all bad or junk.
KEYS = "node1=0x1,node2=0x2"


@settings(max_examples=N, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(cases(bad_devices=[LOOP], good_devices=["/dev/null"], node_keys=KEYS))
def test_no_traceback_and_documented_exit_codes(case: Case) -> None:
    check(case, case.run())


def test_pages_of_garbage_on_stdin_are_one_line_then_the_one_error() -> None:
    """fencing.py warns per line it does not understand; Pacemaker's log gets one line with
    the count and the first three (cut short), then the error -- and nothing twice."""
    garbage = "".join(f"garbage {i} {'x' * 200}\n" for i in range(500))
    stdin = garbage + ("action=validate-all\ndevices=/dev/nonexistent\nnode_keys=a=1,b=2\n"
                       "local_node=a\nbogus_option=1\n")
    r = subprocess.run([AGENT], input=stdin, capture_output=True, text=True, timeout=60)
    lines = r.stderr.splitlines()
    assert r.returncode == 1, r.stderr
    assert len(lines) == 2, r.stderr
    assert "501 line(s) of input not understood, ignored: 'garbage 0 xxx" in lines[0]
    assert lines[0].endswith("; and 498 more") and len(lines[0]) < 300, lines[0]
    assert "Failed: /dev/nonexistent: No such file or directory" in lines[1]


def test_input_fencing_py_refuses_still_says_what_was_not_understood() -> None:
    r = subprocess.run([AGENT], input="nonsense\naction=explode\n", capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "1 line(s) of input not understood, ignored: 'nonsense'" in r.stderr
    assert "Unrecognised action 'explode'" in r.stderr
    assert r.stderr.count("nonsense") == 1, r.stderr
