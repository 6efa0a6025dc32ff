"""fencing.py's pycurl is not loaded by fence_pr's actions (fencing_agent._defer_pycurl):
libcurl's libldap resolves the host's name when it loads, a DNS wait on a partitioned node."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import fence_pr.fencing_agent as fa
def libcurl_mapped():
    with open("/proc/self/maps") as f:
        return "libcurl" in f.read()
before = libcurl_mapped()
error = fa.fencing.pycurl.error
print(before, libcurl_mapped(), issubclass(error, Exception), sys.modules["pycurl"].error is error)
"""


def test_pycurl_loads_on_first_use_only() -> None:
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "True", "True", "True"], r.stdout
