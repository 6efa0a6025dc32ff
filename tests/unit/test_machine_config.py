"""What the machine lab writes into each machine's /etc (tests/lab/machines/config.py) and
how a machine's transfer share is laid out before boot (machine.py); no machine boots here."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.lab.machines import config
from tests.lab.machines.machine import Machine
from tests.lab.machines.net import LabNet


def test_each_node_has_its_own_nvme_host_and_initiator() -> None:
    ids = {config.host_id(n) for n in (1, 2, 3)}
    assert len(ids) == 3
    for i in ids:
        assert str(uuid.UUID(i)) == i  # nvme-cli and nvmet take it as a UUID
    assert len({config.node_iqn(n) for n in (1, 2, 3)}) == 3
    files = config.node_files(2, 2, 12000)
    assert files["nvme/hostid"] == config.host_id(2) + "\n"
    assert files["iscsi/initiatorname.iscsi"] == f"InitiatorName={config.node_iqn(2)}\n"


def test_corosync_quorum_follows_the_node_count() -> None:
    two = config.corosync_conf(2, 12000)
    three = config.corosync_conf(3, 12000)
    assert "two_node: 1" in two and "two_node" not in three
    assert "wait_for_all: 1" in three
    assert "token: 12000" in two
    assert two.count("ring0_addr: 10.15.3.") == 2


def test_storage_machine_runs_no_cluster_and_nodes_do() -> None:
    storage = config.storage_files(2)
    node = config.node_files(1, 2, 12000)
    for unit in ("corosync.service", "pacemaker.service", "multipathd.service"):
        assert storage[f"systemd/system/{unit}"] == config.Link("/dev/null")
        assert f"systemd/system/{unit}" not in node
    assert "corosync/corosync.conf" in node and "corosync/corosync.conf" not in storage


def test_prepare_writes_files_links_and_an_empty_queue(tmp_path: Path) -> None:
    m = Machine("node1", 1, "debian12", config.NODE_NETS, LabNet(config.NODE_NETS), tmp_path,
                config.node_files(1, 2, 12000))
    (tmp_path / "xfer/q").mkdir(parents=True)
    (tmp_path / "xfer/q/stale.sh").write_text("echo left from the last boot\n")
    m._prepare()
    etc = tmp_path / "xfer/etc"
    assert (etc / "hostname").read_text() == "node1\n"
    assert (etc / "systemd/system/pcsd.service").readlink() == Path("/dev/null")
    assert (etc / "fpl/net.sh").stat().st_mode & 0o111
    assert list((tmp_path / "xfer/q").iterdir()) == []
    assert (tmp_path / "xfer").stat().st_mode & 0o077 == 0
