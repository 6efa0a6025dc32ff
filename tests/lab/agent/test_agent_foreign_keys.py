"""`off` never reports a victim fenced while a key it does not know is registered.

A victim unfenced under another key scheme (fence_scsi's default key_value=id, other
node_keys) is not registered under the key this configuration derives: "not registered,
so already off" would leave it writing while Pacemaker believes it fenced.
"""

from __future__ import annotations

import pytest

from fence_pr.pr import prh

from ..fixtures.agentrun import Node
from ..fixtures.io import opened
from ..fixtures.topology import scsi_keys

# `make lab-slow`: foreign keys are the agent's own logic, the same on every kernel;
# out of CI for time (README, what runs where).
pytestmark = pytest.mark.extra

OTHER_SCHEME_KEY = 0x5EE0000000000002  # node2's key as another configuration made it


def test_off_refuses_while_an_unknown_key_is_registered(clean_lio) -> None:  # type: ignore[no-untyped-def]
    lab = clean_lio
    n1 = Node("node1", lab.maps[1])
    assert n1.run("on", "node1").rc == 0
    for lun in lab.luns:
        for p in lun.node_paths(2):
            with opened(p.dev) as fd:
                prh.register(fd, 0, OTHER_SCHEME_KEY, device=p.dev)
    r = n1.run("off", "node2")
    assert r.rc == 1, r
    assert f"0x{OTHER_SCHEME_KEY:x} (not this configuration's)" in r.err, r
    assert "key_value" in r.err, r
    for lun in lab.luns:  # nothing changed: node2 (under its other key) still registered
        assert scsi_keys(lun.paths[(2, 1)].dev).count(OTHER_SCHEME_KEY) == 2, lun.index


def test_off_of_a_node_already_gone_still_succeeds(clean_lio) -> None:  # type: ignore[no-untyped-def]
    """Only keys of this configuration registered, the victim's not: already off."""
    lab = clean_lio
    n1 = Node("node1", lab.maps[1])
    assert n1.run("on", "node1").rc == 0
    r = n1.run("off", "node2")
    assert r.rc == 0, r
