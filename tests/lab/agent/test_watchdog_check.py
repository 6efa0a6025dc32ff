"""fence_pr_check, the watchdog(8) test hook, against real registrations.

Two nodes unfence with fence_pr over LIO (dm maps over tcm_loop, and single-path disks);
node2's check runs with its own configuration file ($FENCE_PR_CHECK_CONF), as the watchdog
daemon would run it from /etc/watchdog.d. Exit codes: 0 key on every device, 1 fenced (key
missing on any device) or unreadable, 2 configuration error; `repair` always 1.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ..fixtures.agentrun import CHECK, NODE_KEYS, Node, Result


# sd-single-path left out of CI (`make lab-slow`): the same check, and CI's 50 min under load.
@pytest.fixture(params=["dm-tcm_loop", pytest.param("sd-single-path", marks=pytest.mark.extra)])
def pair(request, clean_lio):  # type: ignore[no-untyped-def]
    lab = clean_lio
    if request.param.startswith("dm-"):
        return lab, (Node("node1", lab.maps[1]), Node("node2", lab.maps[2]))
    return lab, (Node("node1", [lun.paths[(1, 0)].dev for lun in lab.luns]),
                 Node("node2", [lun.paths[(2, 0)].dev for lun in lab.luns]))


def check(node: Node, conf_dir: Path, *args: str, devices: list[str] | None = None,
          config: str | None = None) -> Result:
    conf = conf_dir / f"fence_pr.{node.name}"
    if config is None:
        config = (f"# fence_pr_check for {node.name}\n"
                  f"devices={','.join(node.devices if devices is None else devices)}\n"
                  f"node_keys={NODE_KEYS}\nlocal_node={node.name}\n")
    conf.write_text(config)
    env = dict(os.environ, FENCE_PR_CHECK_CONF=str(conf))
    r = subprocess.run([CHECK, *(args or ("test",))], capture_output=True, text=True, env=env,
                       timeout=120)
    return Result(r.returncode, r.stdout, r.stderr)


def test_check_passes_until_the_node_is_fenced(pair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, (n1, n2) = pair
    for n in (n1, n2):
        r = n.run("on", n.name)
        assert r.rc == 0, r
    r = check(n2, tmp_path)
    assert r.rc == 0, r
    assert check(n1, tmp_path).rc == 0

    r = n1.pacemaker("off", "node2")
    assert r.rc == 0, r
    r = check(n2, tmp_path)
    assert r.rc == 1 and "fenced" in r.err, r
    for dev in n2.devices:
        assert dev in r.err, r
    r = check(n2, tmp_path, "repair", "1")
    assert r.rc == 1, r
    r = check(n1, tmp_path)  # the survivor stays healthy
    assert r.rc == 0, r


def test_check_fails_when_fenced_from_one_device_only(pair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """fence_scsi_check passes while the key is on ANY device; fence_pr_check needs ALL."""
    _, (n1, n2) = pair
    assert n1.run("on", "node1").rc == 0 and n2.run("on", "node2").rc == 0
    r = Node("node1", n1.devices[1:2]).run("off", "node2")
    assert r.rc == 0, r
    r = check(n2, tmp_path)
    assert r.rc == 1, r
    assert n2.devices[1] in r.err and n2.devices[0] not in r.err, r

    r = n2.run("on", "node2")  # unfenced again: healthy again
    assert r.rc == 0, r
    assert check(n2, tmp_path).rc == 0


@pytest.mark.extra  # `make lab-slow`: configuration checks, as test_agent_validate
def test_check_configuration_errors(clean_lio, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    n2 = Node("node2", clean_lio.maps[2])
    assert n2.run("on", "node2").rc == 0
    r = check(n2, tmp_path, devices=[*n2.devices, "/dev/disk/by-id/wwn-0x6001405000000000"])
    assert r.rc == 2 and "configuration error" in r.err and "wwn-0x6001405000000000" in r.err, r
    r = check(n2, tmp_path, config=f"devices={','.join(n2.devices)}\nnode_keys={NODE_KEYS}\n"
                                   "local_node=node9\n")
    assert r.rc == 2 and "node9" in r.err, r
    env = dict(os.environ, FENCE_PR_CHECK_CONF=str(tmp_path / "absent"))
    r2 = subprocess.run([CHECK, "test"], capture_output=True, text=True, env=env, timeout=60)
    assert r2.returncode == 2 and "no configuration" in r2.stderr, r2
    assert check(n2, tmp_path).rc == 0  # the same node with a correct file is healthy
