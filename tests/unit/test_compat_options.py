"""A fence_scsi or fence_mpath resource carries over to fence_pr as it stands: every option
those agents declare is one fence_pr accepts, spelled the same on stdin and on the command
line, and an option whose meaning fence_pr cannot keep is said in one line, not refused.
(The lab proves that such a resource fences: tests/lab/cluster/test_migration.py.)"""

from __future__ import annotations

import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.badinput import AGENT

ROOT = Path(__file__).resolve().parents[2]
# fence_scsi's options newer than Debian 12's fence-agents 4.12 (upstream fence_scsi.py).
NEWER_SCSI_OPTIONS = {"mpath_register_method"}


def declared(metadata: str) -> dict[str, str]:
    """Parameter name -> its `getopt mixed` text (the command-line spelling)."""
    out = {}
    for p in ET.fromstring(metadata).iter("parameter"):
        g = p.find("getopt")
        out[p.attrib["name"]] = g.attrib.get("mixed", "") if g is not None else ""
    return out


def metadata_of(agent: str) -> dict[str, str]:
    r = subprocess.run([agent, "-o", "metadata"], capture_output=True, text=True, timeout=60,
                       check=True)
    return declared(r.stdout)


OURS = declared((ROOT / "metadata/fence_pr.xml").read_text())


@pytest.mark.parametrize("agent", ["/usr/sbin/fence_scsi", "/usr/sbin/fence_mpath"])
def test_every_option_of_the_old_agent_is_declared_with_its_spelling(agent: str) -> None:
    theirs = metadata_of(agent)
    missing = sorted(set(theirs) - set(OURS))
    assert not missing, f"{agent}'s options fence_pr does not declare: {missing}"
    # The long option as the admin types it (-a/--aptpl, --key-value, --vgs-path...): the
    # part of `mixed` before '=' or the placeholder.  fence_mpath's plug/port/key mean a
    # key there and a node here, which README's migration section explains.
    def spelling(mixed: str) -> str:
        return re.split(r"[=\[<]", mixed)[0].strip()
    differ = {n: (spelling(theirs[n]), spelling(OURS[n])) for n in theirs
              if spelling(theirs[n]) != spelling(OURS[n]) and n not in ("key", "port", "plug")}
    assert not differ, f"spelled differently (theirs, ours): {differ}"


def test_newer_fence_scsi_options_are_declared() -> None:
    assert set(OURS) >= NEWER_SCSI_OPTIONS


def run(stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AGENT], input=stdin, capture_output=True, text=True, timeout=60)


# A validate-all that fails at the device, after the options were read: no device is
# touched by it (/dev/nonexistent), and the notices come before the error.
BASE = "action=validate-all\ndevices=/dev/nonexistent\nnode_keys=a=1,b=2\nlocal_node=a\n"


def test_a_fence_scsi_resource_as_pcs_writes_it_is_accepted_with_one_notice_per_option() -> None:
    given = ("aptpl=1\nreadonly=1\nsuppress-errors=1\nsg_persist_path=/usr/bin/sg_persist\n"
             "sg_turs_path=/usr/bin/sg_turs\nvgs_path=/sbin/vgs\nmpath_register_method=single\n"
             "mpathpersist_path=/usr/sbin/mpathpersist\nstore_path=/var/run/cluster\n"
             "use_sudo=1\nsudo_path=/usr/bin/sudo\n")
    r = run(BASE + given)
    assert "not understood" not in r.stderr, r.stderr
    for name in ("aptpl", "readonly", "suppress-errors", "sg_persist_path", "sg_turs_path",
                 "mpath_register_method", "mpathpersist_path", "store_path", "sudo",
                 "sudo_path"):
        assert sum(line.split(": ")[1:2] == [name] for line in r.stderr.splitlines()) == 1, (
            name, r.stderr)
    assert "vgs_path:" not in r.stderr  # kept: fence_pr runs that vgs
    assert "Failed: /dev/nonexistent: No such file or directory" in r.stderr


def test_options_not_set_or_set_off_say_nothing() -> None:
    r = run(BASE + "aptpl=0\nreadonly=false\n")
    assert "aptpl" not in r.stderr and "readonly" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr


def test_a_bad_choice_is_refused_before_any_device() -> None:
    r = run(BASE + "mpath_register_method=both\n")
    assert r.returncode == 1
    assert "mpath-register-method" in r.stderr and "nonexistent" not in r.stderr, r.stderr


def test_command_line_spellings_of_fence_scsi() -> None:
    r = subprocess.run([AGENT, "-o", "validate-all", "-d", "/dev/nonexistent", "--node_keys",
                        "a=1,b=2", "--local_node", "a", "--key-value", "id", "-a",
                        "--sg_persist-path", "/x", "--vgs-path", "/sbin/vgs", "-H", "0"],
                       capture_output=True, text=True, timeout=60)
    assert "aptpl: Every registration persists" in r.stderr, r.stderr
    assert "sg_persist_path: Not used" in r.stderr, r.stderr
    assert "Failed: /dev/nonexistent" in r.stderr, r.stderr
