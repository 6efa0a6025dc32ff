"""Key derivation (fence_pr's own and fence_scsi's), key parsing and the corosync node list."""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import stat
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fence_pr import keys
from fence_pr.host import corosync
from fence_pr.host.corosync import ClusterInfo, CmapError, NodeEntry
from fence_pr.keys import KeyCollision, KeyDerivationError, KeyFormatError, KeyScheme
from fence_pr.pr.prtypes import Key

CMAP = """\
internal_configuration.service.0.name (str) = corosync_cmap
nodelist.local_node_pos (u32) = 1
nodelist.node.0.name (str) = alpha
nodelist.node.0.nodeid (u32) = 3
nodelist.node.0.ring0_addr (str) = 10.0.0.3
nodelist.node.0.ring1_addr (str) = 192.168.0.3
nodelist.node.1.name (str) = beta
nodelist.node.1.nodeid (u32) = 1
nodelist.node.1.ring0_addr (str) = 10.0.0.1
nodelist.node.2.ring0_addr (str) = 10.0.0.7
runtime.config.totem.token (u32) = 3000
this line is not cmap output
totem.cluster_name (str) = mycluster
"""

# --- fence_scsi compatibility ----------------------------------------------------------------


def independent_id_key(cluster: str, position: int) -> int:
    # Written from the algorithm: first 4 hex digits of md5(cluster), then the position as
    # (at least) 4 decimal digits, and sg_persist reads the whole string as hex.
    return int(hashlib.md5(cluster.encode()).hexdigest()[:4] + str(position).zfill(4), 16)


def independent_hash_key(cluster: str, node: str) -> int:
    return int(hashlib.md5(cluster.encode()).hexdigest()[:4]
               + hashlib.md5(node.encode()).hexdigest()[:4], 16)


def test_fence_scsi_known_values() -> None:
    # md5("mycluster") = 6c9d..., md5("node2") = 7888...: checked against /usr/sbin/fence_scsi
    assert keys.fence_scsi_key("mycluster", 1) == 0x6C9D0001
    assert keys.fence_scsi_hash_key("mycluster", "node2") == 0x6C9D7888


@pytest.mark.parametrize("position", [0, 1, 9, 10, 15, 99, 1234, 9999, 10000, 123456])
def test_fence_scsi_id_key(position: int) -> None:
    assert keys.fence_scsi_key("prod-cluster", position) == independent_id_key(
        "prod-cluster", position)


def test_fence_scsi_position_digits_are_decimal_read_as_hex() -> None:
    # position 10 -> "0010" -> 0x10, not 0x0a
    assert keys.fence_scsi_key("c", 10) & 0xFFFF == 0x10


@pytest.mark.parametrize("node", ["node1", "node2", "db-01.example.com", "10.0.0.1"])
def test_fence_scsi_hash_key(node: str) -> None:
    assert keys.fence_scsi_hash_key("prod-cluster", node) == independent_hash_key(
        "prod-cluster", node)


def test_fence_scsi_rejects_non_ascii() -> None:
    with pytest.raises(KeyDerivationError, match="ASCII"):
        keys.fence_scsi_key("clüster", 1)


def _load_fence_scsi() -> ModuleType:
    path = "/usr/sbin/fence_scsi"
    if not os.path.exists(path):
        pytest.skip("fence_scsi not installed")
    loader = importlib.machinery.SourceFileLoader("fence_scsi_under_test", path)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    try:
        loader.exec_module(module)
    except Exception as exc:  # fencing library missing, etc.
        pytest.skip(f"cannot import fence_scsi: {exc}")
    return module


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("scheme", ["id", "hash"])
@pytest.mark.parametrize("plug", ["alpha", "beta", "10.0.0.7", "192.168.0.3"])
def test_matches_installed_fence_scsi(monkeypatch: pytest.MonkeyPatch, scheme: str,
                                      plug: str) -> None:
    fence_scsi = _load_fence_scsi()

    def run_cmd(options: dict[str, Any], cmd: str) -> dict[str, Any]:
        if cmd.endswith("totem.cluster_name"):
            out = "totem.cluster_name (str) = mycluster\n"
        else:
            out = "".join(line + "\n" for line in CMAP.splitlines()
                          if line.startswith("nodelist."))
        return {"rc": 0, "out": out, "err": ""}

    monkeypatch.setattr(fence_scsi, "run_cmd", run_cmd)
    theirs = fence_scsi.generate_key(
        {"--key-value": scheme, "--plug": plug, "--corosync-cmap-path": "corosync-cmapctl"})
    ours = keys.derive_key(KeyScheme(scheme), corosync.parse_cmapctl(CMAP), plug)
    assert ours == int(theirs, 16)


# --- fence_pr's own key ----------------------------------------------------------------------


def test_corosync_key_layout() -> None:
    key = keys.corosync_key("mycluster", 3)
    assert key & 0xFFFFFFFF == 3
    assert key >> 32 == int.from_bytes(hashlib.sha256(b"mycluster").digest()[:4], "big")


def test_corosync_key_is_stable() -> None:
    # frozen literal: changing the derivation would strand every existing registration
    assert keys.corosync_key("mycluster", 1) == 0x6D9999DD00000001
    assert keys.corosync_key("mycluster", 1) == keys.corosync_key("mycluster", 1)


def test_corosync_key_depends_on_cluster() -> None:
    assert keys.corosync_key("a", 1) != keys.corosync_key("b", 1)


@pytest.mark.parametrize("node_id", [0, -1, 1 << 32])
def test_corosync_key_rejects_bad_node_id(node_id: int) -> None:
    with pytest.raises(KeyDerivationError):
        keys.corosync_key("c", node_id)


@given(st.text(max_size=40), st.integers(min_value=1, max_value=0xFFFFFFFF))
def test_corosync_key_never_zero_high(cluster: str, node_id: int) -> None:
    key = keys.corosync_key(cluster, node_id)
    assert key >> 32 != 0
    assert key & 0xFFFFFFFF == node_id
    assert 0 < key < 1 << 64


def test_nodeid_scheme_uses_node_id_not_position() -> None:
    info = corosync.parse_cmapctl(CMAP)
    assert keys.derive_key(KeyScheme.NODEID, info, "alpha") & 0xFFFFFFFF == 3
    assert keys.derive_key(KeyScheme.ID, info, "alpha") & 0xFFFF == 0x0000
    reordered = ClusterInfo("mycluster", [
        NodeEntry(n.name, n.nodeid, 2 - n.position, n.addrs) for n in info.nodes])
    assert keys.derive_key(KeyScheme.NODEID, reordered, "alpha") == keys.derive_key(
        KeyScheme.NODEID, info, "alpha")
    assert keys.derive_key(KeyScheme.ID, reordered, "alpha") != keys.derive_key(
        KeyScheme.ID, info, "alpha")


def test_derive_errors() -> None:
    info = corosync.parse_cmapctl(CMAP)
    with pytest.raises(KeyDerivationError, match="not in the corosync node list"):
        keys.derive_key(KeyScheme.NODEID, info, "gamma")
    with pytest.raises(KeyDerivationError, match="no nodeid"):
        keys.derive_key(KeyScheme.NODEID, info, "10.0.0.7")
    with pytest.raises(KeyDerivationError, match="cluster_name"):
        keys.derive_key(KeyScheme.NODEID, ClusterInfo(None, info.nodes), "alpha")


def test_scheme_values_match_fence_scsi_option() -> None:
    assert KeyScheme("id") is KeyScheme.ID
    assert KeyScheme("hash") is KeyScheme.HASH
    assert KeyScheme("nodeid") is KeyScheme.NODEID


# --- explicit keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [
    ("0x1", 1),
    ("1", 1),
    ("0X1A", 0x1A),
    (" 0xdeadbeef\n", 0xDEADBEEF),
    ("ffffffffffffffff", (1 << 64) - 1),
    ("0x00000000000000001", 1),
    ("6c9d0001", 0x6C9D0001),
])
def test_parse_key_accepts(text: str, value: int) -> None:
    assert keys.parse_key(text) == value


@pytest.mark.parametrize("text", [
    "", "0x", "0", "0x0", "000", "-1", "+1", "0x-1", "0x1_0", "1 2", "g", "0xg1",
    "1ffffffffffffffff", "0x10000000000000000", "1.0", "0xx1", "x1",
])
def test_parse_key_rejects(text: str) -> None:
    with pytest.raises(KeyFormatError, match="hexadecimal"):
        keys.parse_key(text)


def test_key_format_error_is_value_error() -> None:
    assert issubclass(KeyFormatError, ValueError)


@given(st.integers(min_value=1, max_value=(1 << 64) - 1))
def test_parse_format_round_trip(key: int) -> None:
    assert keys.parse_key(str(Key(key))) == key
    assert keys.parse_key(f"{key:X}") == key


def test_parsed_and_derived_keys_are_keys() -> None:
    assert type(keys.parse_key("0x1a")) is Key
    assert type(keys.corosync_key("c", 1)) is Key
    assert type(keys.fence_scsi_key("c", 1)) is Key
    assert type(keys.fence_scsi_hash_key("c", "n")) is Key


def test_check_unique() -> None:
    keys.check_unique({"a": Key(1), "b": Key(2)})
    with pytest.raises(KeyCollision) as info:
        keys.check_unique({"a": Key(1), "b": Key(2), "c": Key(1)})
    assert "'a'" in str(info.value) and "'c'" in str(info.value) and "0x1" in str(info.value)


# --- corosync-cmapctl ------------------------------------------------------------------------


def test_parse_cmapctl() -> None:
    info = corosync.parse_cmapctl(CMAP)
    assert info.cluster_name == "mycluster"
    assert info.nodes == [
        NodeEntry("alpha", 3, 0, ("10.0.0.3", "192.168.0.3")),
        NodeEntry("beta", 1, 1, ("10.0.0.1",)),
        NodeEntry(None, None, 2, ("10.0.0.7",)),
    ]
    assert info.local() == info.nodes[1]


def test_lookup() -> None:
    info = corosync.parse_cmapctl(CMAP)
    assert info.lookup("alpha") is info.nodes[0]
    assert info.lookup("192.168.0.3") is info.nodes[0]
    assert info.lookup("10.0.0.7") is info.nodes[2]
    assert info.lookup("alp") is None


def test_lookup_prefers_names_over_addresses() -> None:
    info = ClusterInfo("c", [NodeEntry("x", 1, 0, ("y",)), NodeEntry("y", 2, 1, ())])
    assert info.lookup("y") is info.nodes[1]


def test_parse_cmapctl_empty() -> None:
    info = corosync.parse_cmapctl("")
    assert info.cluster_name is None and info.nodes == [] and info.local() is None


def test_parse_cmapctl_value_with_spaces() -> None:
    info = corosync.parse_cmapctl("nodelist.node.0.name (str) = a b\n")
    assert info.nodes[0].name == "a b"


def test_load_cluster_info_uses_reader() -> None:
    assert corosync.load_cluster_info(lambda: CMAP).cluster_name == "mycluster"


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "corosync-cmapctl"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_run_cmapctl(tmp_path: Path) -> None:
    out = corosync.run_cmapctl(_script(tmp_path, "echo 'totem.cluster_name (str) = c1'\n"))
    assert corosync.parse_cmapctl(out).cluster_name == "c1"


def test_run_cmapctl_failure(tmp_path: Path) -> None:
    with pytest.raises(CmapError, match=r"exited with 1.*not running"):
        corosync.run_cmapctl(_script(tmp_path, "echo 'corosync not running' >&2; exit 1\n"))
    with pytest.raises(CmapError, match="cannot run"):
        corosync.run_cmapctl(str(tmp_path / "missing"))
