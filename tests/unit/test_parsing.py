"""Parsers for dm status, vgs output and the watchdog check's configuration."""

from __future__ import annotations

from fence_pr.host.dm import parse_dm_status
from fence_pr.host.lvm import parse_vgs
from fence_pr.watchdog import main as check_main
from fence_pr.watchdog import parse_config


def test_dm_status_path_states() -> None:
    line = "0 8192 multipath 2 0 0 0 1 1 A 0 2 0 8:0 A 0 8:32 F 1"
    assert parse_dm_status(line) == {"8:0": "A", "8:32": "F"}


def test_dm_status_without_paths() -> None:
    assert parse_dm_status("0 8192 multipath 2 0 0 0 0 0") == {}


def test_vgs_shared_only() -> None:
    out = "\n".join([
        "  wz--nc:     :/dev/sdb",      # clvm (6th attr char 'c')
        "  wz--ns:dlm:/dev/sdc",        # lvmlockd with dlm
        "  wz--n-:    :/dev/sda2",      # local VG: never fenced storage
        "  wz--ns:sanlock:/dev/sdc",    # duplicate PV listed once
    ])
    assert parse_vgs(out) == ["/dev/sdb", "/dev/sdc"]


def test_check_config_uses_agent_option_names() -> None:
    text = "# fence_pr_check\ndevices=/dev/mapper/a,/dev/mapper/b\nnode_keys='n1=0x1,n2=0x2'\n" \
           "local_node = n1\ncorosync_cmap_path=/usr/sbin/corosync-cmapctl\n"
    assert parse_config(text) == {
        "--devices": "/dev/mapper/a,/dev/mapper/b", "--node_keys": "n1=0x1,n2=0x2",
        "--local_node": "n1", "--corosync-cmap-path": "/usr/sbin/corosync-cmapctl"}


def test_check_repair_never_claims_repaired() -> None:
    assert check_main(["repair", "1"]) == 1


def test_check_without_configuration_is_a_config_error(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FENCE_PR_CHECK_CONF", str(tmp_path / "missing"))
    assert check_main(["test"]) == 2


def test_wwid_spellings_of_one_lu_compare_equal() -> None:
    from fence_pr.devices import normalize_wwid

    a = normalize_wwid("naa.6001405abcdef")
    assert a == normalize_wwid("mpath-36001405abcdef") == normalize_wwid("36001405ABCDEF")
    assert normalize_wwid("eui.0025385b71b0") == "20025385b71b0"
    assert normalize_wwid("naa.6001405abcdef") != normalize_wwid("naa.6001405abcdee")
