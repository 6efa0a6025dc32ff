"""fence_pr laid out as the Debian package lays it out, under a prefix of the guest's own
(local) file system: the package compiled, the metadata in share/, the agent script from
packaging/sbin/fence_pr.in (Python without site).

The lab's venv lives in the checkout, shared from the host over 9p: every module lookup is
a round trip to the host, and on a busy host one agent start took 12 s there (uncached),
past pacemaker-fenced's fixed 10 s for `metadata`.  What Pacemaker runs in the lab
cluster, what the lab tests run as the agent and what the bench times is this copy, as on
a real node; the tests themselves still import the checkout.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
# Where the lab installs it, on the guest's own file system: what the cluster's nodes and
# the lab tests run as fence_pr.
LAB_PREFIX = Path("/opt/fence_pr-lab")


def install(prefix: Path) -> Path:
    """fence_pr laid out under `prefix` as the .deb lays it out under /usr (package compiled,
    metadata in share/, the agent script from packaging/sbin/fence_pr.in); its script."""
    site = prefix / "lib/python3/dist-packages"
    site.mkdir(parents=True, exist_ok=True)
    dest = site / "fence_pr"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(PROJECT / "fence_pr", dest, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["/usr/bin/python3", "-m", "compileall", "-q", str(dest)], check=True)
    share = prefix / "share/fence_pr"
    share.mkdir(parents=True, exist_ok=True)
    for name in ("fence_pr.xml", "fence_pr.usage"):
        shutil.copy2(PROJECT / "metadata" / name, share / name)
    script = prefix / "sbin/fence_pr"
    script.parent.mkdir(parents=True, exist_ok=True)
    template = (PROJECT / "packaging/sbin/fence_pr.in").read_text()
    script.write_text(template.replace("@SITELIB@", str(site)))
    script.chmod(0o755)
    return script
