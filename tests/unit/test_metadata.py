"""metadata/fence_pr.xml is the golden copy of `fence_pr -o metadata`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RNG = Path("/usr/share/cluster/relaxng/metadata.rng")  # shipped by Debian's fence-agents


def agent_metadata() -> str:
    # The console script, as installed: fencing.py names the agent after argv[0].
    agent = Path(sys.executable).parent / "fence_pr"
    r = subprocess.run([str(agent), "-o", "metadata"],
                       capture_output=True, text=True, cwd=ROOT, check=True)
    return r.stdout


def test_metadata_matches_golden_copy() -> None:
    golden = (ROOT / "metadata/fence_pr.xml").read_text()
    assert agent_metadata() == golden, "regenerate: fence_pr -o metadata > metadata/fence_pr.xml"


def test_metadata_validates_against_fence_agents_schema(tmp_path: Path) -> None:
    assert RNG.exists(), f"{RNG} missing: install fence-agents (make setup)"
    r = subprocess.run(["xmllint", "--noout", "--relaxng", str(RNG),
                        str(ROOT / "metadata/fence_pr.xml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_metadata_declares_unfencing_and_no_reboot() -> None:
    xml = agent_metadata()
    assert '<action name="on" on_target="1" automatic="1"/>' in xml
    assert '<action name="reboot"' not in xml
    for name in ("devices", "key", "key_value", "port", "plug", "nodename", "logfile",
                 "corosync_cmap_path", "node_keys", "power_timeout"):
        assert f'name="{name}"' in xml, name


def test_man_page_renders_from_metadata() -> None:
    """fence-agents builds man pages from the metadata with fence2man.xsl; so does packaging."""
    xsl = RNG.parent / "fence2man.xsl"
    r = subprocess.run(["xsltproc", str(xsl), str(ROOT / "metadata/fence_pr.xml")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "fence_pr" in r.stdout and "devices" in r.stdout
