"""Keys derived through a real corosync-cmapctl invocation (a stand-in script printing
cmap as corosync 3 does), end to end through the agent's option handling."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fence_pr.host.budget import Deadline
from fence_pr.keys import KeyCollision, check_unique, corosync_key, fence_scsi_key
from fence_pr.plan import Refused, _node_keys
from fence_pr.pr.prtypes import Key

CMAP = """\
totem.cluster_name (str) = hacluster
nodelist.local_node_pos (u32) = 1
nodelist.node.0.name (str) = alpha
nodelist.node.0.nodeid (u32) = 7
nodelist.node.0.ring0_addr (str) = 192.0.2.7
nodelist.node.1.name (str) = beta
nodelist.node.1.nodeid (u32) = 3
nodelist.node.1.ring0_addr (str) = 192.0.2.3
"""


@pytest.fixture
def cmapctl(tmp_path: Path) -> str:
    script = tmp_path / "corosync-cmapctl"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{CMAP}EOF\n")
    script.chmod(0o755)
    return str(script)


def test_nodeid_keys_follow_node_ids_not_positions(cmapctl: str) -> None:
    keys, local = _node_keys({"--corosync-cmap-path": cmapctl}, Deadline(10))
    assert local == "beta"
    assert keys == {"alpha": corosync_key("hacluster", 7), "beta": corosync_key("hacluster", 3)}
    assert keys["alpha"] & 0xFFFFFFFF == 7


def test_fence_scsi_id_scheme_uses_positions(cmapctl: str) -> None:
    keys, _ = _node_keys({"--corosync-cmap-path": cmapctl, "--key-value": "id"}, Deadline(10))
    assert keys == {"alpha": fence_scsi_key("hacluster", 0), "beta": fence_scsi_key("hacluster", 1)}


def test_broken_cmapctl_is_an_error(tmp_path: Path) -> None:
    from fence_pr.host.corosync import CmapError

    bad = tmp_path / "cmap"
    bad.write_text("#!/bin/sh\necho 'Failed to initialize the cmap API' >&2\nexit 1\n")
    bad.chmod(0o755)
    with pytest.raises(CmapError, match="cmap API"):
        _node_keys({"--corosync-cmap-path": str(bad)}, Deadline(10))


def test_a_hanging_cmapctl_ends_with_the_budget(tmp_path: Path) -> None:
    """corosync-cmapctl gets what is left of power_timeout, not a fixed 10 s of its own."""
    from fence_pr.host.corosync import CmapError

    hang = tmp_path / "cmap"
    hang.write_text("#!/bin/sh\nexec sleep 30\n")
    hang.chmod(0o755)
    t0 = time.monotonic()
    with pytest.raises(CmapError, match=r"did not answer within 0\.\d s"):
        _node_keys({"--corosync-cmap-path": str(hang)}, Deadline(0.5))
    assert time.monotonic() - t0 < 5


def test_explicit_keys_need_name_equals_key() -> None:
    with pytest.raises(Refused):
        _node_keys({"--node_keys": "alpha:0x1"}, Deadline(10))


def test_collision_is_named() -> None:
    with pytest.raises(KeyCollision, match="alpha"):
        check_unique({"alpha": Key(5), "beta": Key(5)})


@pytest.mark.parametrize("value", ["NODEID", "ID", "HASH"])
def test_key_value_as_fencing_py_leaves_it(cmapctl: str, value: str) -> None:
    """fencing.py's check_input upper-cases every option that has "choices" (as under
    pacemaker-fenced, where key_value gets its default): the scheme must still be found."""
    keys, _ = _node_keys({"--corosync-cmap-path": cmapctl, "--key-value": value},
                         Deadline(10))
    assert keys == _node_keys({"--corosync-cmap-path": cmapctl,
                               "--key-value": value.lower()}, Deadline(10))[0]
