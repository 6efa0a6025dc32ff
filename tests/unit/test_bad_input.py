"""Hostile input never gives a traceback or an undocumented exit code (FENCE_PR_BAD_INPUTS
cases: 150 in CI, 10,000 in `make reliability`).  The lab re-runs a sample against real
LUNs and checks that no registration or PR generation moved (tests/lab/agent/test_bad_input.py)."""

from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, given, settings

from tests.badinput import Case, cases, check, symlink_loop

N = int(os.environ.get("FENCE_PR_BAD_INPUTS", "150"))
LOOP = symlink_loop(tempfile.mkdtemp(prefix="fence_pr-badinput-"))
# No real disk on this host may ever be named: the devices are all bad or junk.
KEYS = "node1=0x1,node2=0x2"


@settings(max_examples=N, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(cases(bad_devices=[LOOP], good_devices=["/dev/null"], node_keys=KEYS))
def test_no_traceback_and_documented_exit_codes(case: Case) -> None:
    check(case, case.run())
