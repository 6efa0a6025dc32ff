"""The agent's input checks that come before any device is looked at."""

from __future__ import annotations

import pytest

from fence_pr.keys import KeyCollision, KeyFormatError
from fence_pr.plan import Plan, Refused, budget, make_plan

KEYS = "node1=0x1,node2=0x2"


def plan_of(options: dict[str, str]) -> Plan:
    """As the agent does it: the budget first, then the plan within it."""
    return make_plan(options, budget(options))


def opts(**kw: str) -> dict[str, str]:
    base = {"--action": "off", "--node_keys": KEYS, "--local_node": "node1",
            "--devices": "/dev/does-not-matter"}
    base.update({f"--{k}": v for k, v in kw.items()})
    return base


@pytest.mark.parametrize(("kw", "exc", "needle"), [
    ({"plug": "node1"}, Refused, "itself"),
    ({"plug": "node2", "key": "0x1"}, Refused, "itself"),
    ({"plug": "node9"}, Refused, "node9"),
    ({"action": "on", "plug": "node2"}, Refused, "must run on node2"),
    ({"plug": "node2", "node_keys": "node1=0x1,node2=0x1"}, KeyCollision, "node"),
    ({"plug": "node2", "node_keys": "node1=0x1,node2=0xzz"}, KeyFormatError, "0xzz"),
    ({"plug": "node2", "node_keys": "node1=0x1,node2"}, Refused, "name=hexkey"),
    ({"plug": "node2", "local_node": "node3"}, Refused, "node3"),
    ({"plug": "node2", "power-timeout": "soon"}, Refused, "power_timeout"),
])
def test_refused_before_devices(kw: dict[str, str], exc: type[Exception], needle: str) -> None:
    with pytest.raises(exc, match=needle):
        plan_of(opts(**kw))


def test_off_needs_a_target() -> None:
    with pytest.raises(Refused, match="no target"):
        plan_of(opts())


@pytest.mark.parametrize("kw", [{"nodename": "node1"}, {"plug": "node1"}])
def test_validate_all_with_this_node_as_target_is_not_self_fencing(kw: dict[str, str]) -> None:
    """pcs --agent-validation and stonith_admin --validate name the local node as the target
    (seen in the lab cluster); that is no victim, so validate-all goes on to the devices."""
    with pytest.raises(Exception) as e:
        plan_of(opts(action="validate-all", **kw))
    assert "itself" not in str(e.value)
