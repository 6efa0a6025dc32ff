"""The bench's host- and guest-side parsers: LIO's trace lines and the table's inputs."""

from __future__ import annotations

from typing import Any

from tests.lab.tools.bench import cluster_table, stopped_run, table, with_section
from tests.lab.tools.bench_cluster import merged
from tests.lab.tools.bench_plot import series
from tests.lab.tools.bench_trace import commands

# Two lines as the kernel's ftrace prints target_sequencer_start (TP_printk in
# include/trace/events/target.h), plus one from another event that must not count.
PREFIX = " kworker/0:1-88   [000] .....  "
TRACE = "\n".join([
    PREFIX + "335.742311: target_sequencer_start: iqn.2026-11.org.lab:node1 -> LUN 005 tag 0x2"
    " PERSISTENT_RESERVE_OUT data_length     24  CDB 5f 04 00 00 00 00 00 00 18 00 00 00 00"
    " 00 00 00  (TA:SIMPLE C:00)",
    PREFIX + "336.001200: target_sequencer_start: iqn.2026-11.org.lab:node2 -> LUN 017 tag 0x9"
    " READ_10 data_length   4096  CDB 28 00 00 01 ff f8 00 00 08 00 00 00 00 00 00 00"
    "  (TA:SIMPLE C:00)",
    PREFIX + "336.001900: target_cmd_complete: iqn.2026-11.org.lab:node2 <- LUN 017 status GOOD",
]) + "\n"


def test_trace_lines_become_commands() -> None:
    pr_out, read = commands(TRACE)
    assert (pr_out.initiator, pr_out.lun, pr_out.opcode) == ("node1", 5, "5f")
    assert pr_out.cdb[1] == 0x04  # PREEMPT AND ABORT's service action
    assert (read.stamp, read.initiator, read.lun, read.opcode) == (336.0012, "node2", 17, "28")
    assert read.lba == 0x1FFF8
    assert len(read.cdb) == 16


def results(mpd_drain: dict[str, float]) -> list[dict[str, object]]:
    return [
        {"setup_s": 1220.0, "udev_drain_s": 1010.0, "kernel": "7.3.4"},
        {"startup": "fence_pr", "wall": 0.73},
        {"agent": "fence_pr", "luns": 16, "runs": 3, "wall": 1.4, "cmds_per_lun": 3.0,
         "cmds_median": 3},
        {"agent": "fence_scsi", "luns": 16, "runs": 3, "wall": 17.5, "cmds_per_lun": 14.0},
        {"multipathd_start_s": 250.0, **mpd_drain},
    ]


def test_table_reports_both_udev_drains_from_their_own_keys() -> None:
    text = table(results({"multipathd_udev_drain_s": 955.0}), "7.3", 5400.0)
    assert "| 16 | fence_scsi | 17.50 s | 3 | 12.5x | 14.0 |" in text
    assert "| 16 | fence_pr | 1.40 s | 3 | 1.0x | 3.0 (3) |" in text
    assert "Lab set-up 1220 s (udev's backlog 1010 s of it)" in text
    assert "multipathd start 250 s (then udev's backlog from its take-over of the maps 955 s)" \
        in text
    assert "kernel 7.3.4" in text and "whole bench 90 min" in text


def test_table_without_a_multipathd_drain_says_nothing_of_it() -> None:
    text = table(results({}), "7.3", 5400.0)
    assert "Lab set-up 1220 s (udev's backlog 1010 s of it)" in text
    assert "take-over" not in text


def test_plot_series_are_per_agent_and_action_sorted_by_luns_without_skipped_rows() -> None:
    rows: list[dict[str, object]] = [
        {"agent": "fence_pr", "luns": 16, "wall": 1.6},
        {"agent": "fence_pr", "luns": 1, "wall": 1.5},
        {"agent": "fence_scsi", "luns": 256, "skipped": "projected over 1,800 s"},
        {"agent": "fence_scsi", "luns": 1, "wall": 1.7, "action": "status"},
        {"startup": "fence_pr", "wall": 0.6},
        {"total_s": 5429.0},
    ]
    assert series(rows) == {"fence_pr off": [(1, 1.5), (16, 1.6)],
                            "fence_scsi status": [(1, 1.7)]}


def test_monitoring_rows_get_their_own_table_and_the_off_rows_stay_off() -> None:
    rows = [*results({}),
        {"agent": "fence_pr", "action": "monitor", "luns": 16, "runs": 3, "wall": 1.0,
         "cmds_per_lun": 2.0, "cmds_median": 2},
        {"agent": "fence_pr", "action": "monitor", "luns": 256, "runs": 3, "wall": 2.5,
         "cmds_per_lun": 2.0, "cmds_median": 2},
        {"agent": "fence_pr", "action": "status", "luns": 16, "runs": 3, "wall": 0.9,
         "cmds_per_lun": 1.0, "cmds_median": 1},
        {"agent": "fence_pr", "action": "status", "luns": 256, "skipped": "rc 1: ['gone']"},
    ]
    text = table(rows, "7.3", 5400.0)
    assert "| 16 | fence_pr | 1.40 s | 3 | 1.0x | 3.0 (3) |" in text  # `off`, not monitor's
    assert "| 16 | monitor | 1.00 s | 3 | 2.0 (2) |" in text
    assert "| 16 | status | 0.90 s | 3 | 1.0 (1) |" in text
    assert "| 256 | status | not run: rc 1: ['gone'] | | |" in text
    assert "- `monitor` at 256 LUNs took 2.50x its time at 16 (target under 3x: met)" in text
    assert "- `monitor`: at most 2.0 commands per LUN at any N (target at most 2, one per " \
        "path, 2 paths: met)" in text
    assert "- `status`: at most 1.0 commands per LUN at any N (target at most 1, one per " \
        "device: met)" in text


def test_a_monitoring_target_missed_is_said() -> None:
    rows = [{"agent": "fence_pr", "action": action, "luns": n, "runs": 3, "wall": wall,
             "cmds_per_lun": c} for action, n, wall, c in
            (("monitor", 16, 1.0, 2.0), ("monitor", 256, 3.2, 2.5), ("status", 16, 0.9, 1.0))]
    text = table(rows, "7.3", 60.0)
    assert "took 3.20x its time at 16 (target under 3x: NOT met)" in text
    assert "at most 2.5 commands per LUN at any N (target at most 2, one per path, 2 paths: " \
        "NOT met)" in text


def small_run(pr1: float, pr4: float, floor: float) -> list[dict[str, object]]:
    walls = {("fence_pr", 1): pr1, ("fence_scsi", 1): 3.3, ("fence_mpath", 1): 4.0,
             ("fence_pr", 4): pr4, ("fence_scsi", 4): 5.0, ("fence_mpath", 4): 9.0}
    return [{"startup": "python3 + fencing.py (floor)", "wall": floor},
            *({"agent": a, "luns": n, "runs": 5, "wall": w, "cmds_per_lun": 3.0}
              for (a, n), w in walls.items())]


def test_the_small_targets_are_each_marked_met_or_not_from_the_medians() -> None:
    text = table(small_run(1.0, 1.25, 0.8), "7.3", 60.0)
    assert "- 1 LUN: fence_scsi 3.30 s is 3.30x fence_pr's 1.00 s (target at least 3x: met)" \
        in text
    assert "- 1 LUN: fence_mpath 4.00 s is 4.00x fence_pr's 1.00 s (target at least 4x: met)" \
        in text
    assert "- 4 LUNs: fence_scsi 5.00 s is 4.00x fence_pr's 1.25 s (target at least 5x: " \
        "NOT met)" in text
    assert "- 4 LUNs: fence_mpath 9.00 s is 7.20x fence_pr's 1.25 s (target at least 8x: " \
        "NOT met)" in text
    assert "- fence_pr's 1-LUN `off` 1.00 s is 1.25x its floor, python3 + fencing.py (floor) " \
        "0.80 s in the same guest (target at most 1.5x: met)" in text
    assert "1.60x its floor" in table(small_run(1.28, 1.3, 0.8), "7.3", 60.0)
    assert "(target at most 1.5x: NOT met)" in table(small_run(1.28, 1.3, 0.8), "7.3", 60.0)


def test_no_small_runs_no_targets_block() -> None:
    assert "Issue 17's targets" not in table(results({}), "7.3", 5400.0)


def test_no_monitoring_rows_no_monitoring_table() -> None:
    assert "being monitored" not in table(results({}), "7.3", 5400.0)


def test_the_cluster_table_has_medians_ratios_failures_and_the_4_lun_target() -> None:
    rows: list[dict[str, Any]] = [
        {"agent": "fence_scsi", "luns": 4, "request": [30.0, 32.0, 31.0], "loss": [50.0],
         "failed": ["run 2 loss: timed out"]},
        {"agent": "fence_pr", "luns": 4, "request": [10.0, 12.0, 11.0], "loss": [40.0, 42.0],
         "failed": []},
        {"agent": "fence_mpath", "luns": 4, "skipped": "multipathd: gone"},
    ]
    text = cluster_table(rows)
    lines = text.splitlines()
    pr = lines.index("| 4 | fence_pr | 11.00 s | 41.00 s | 3 / 2 | 1.0x |")
    assert lines[pr + 1] == "| 4 | fence_scsi | 31.00 s | 50.00 s | 3 / 1 | 2.8x |"
    assert lines[pr + 2] == "| 4 | fence_mpath | not run: multipathd: gone | | | |"
    assert "- fence_scsi at 4 LUNs, run 2 loss: timed out" in lines
    assert "At 4 LUNs fence_scsi's request to completion is 2.82x fence_pr's (target at " \
        "least 2x)." in lines


def test_no_cluster_rows_no_section() -> None:
    assert cluster_table([]) == ""


def test_a_cluster_run_replaces_only_its_own_rows() -> None:
    old = [{"agent": "fence_pr", "luns": 1, "request": [1.0]},
           {"agent": "fence_pr", "luns": 4, "request": [2.0]}]
    new = [{"agent": "fence_pr", "luns": 4, "request": [3.0]}]
    assert merged(old, new) == [{"agent": "fence_pr", "luns": 4, "request": [3.0]},
                                {"agent": "fence_pr", "luns": 1, "request": [1.0]}]


def test_a_run_renews_its_own_section_and_keeps_the_analysis_around_it() -> None:
    generated = with_section("", "bench", "old table")
    doc = "# Bench\n\nintro\n\n" + generated + "\n## Analysis\n\nkept\n"
    renewed = with_section(doc, "bench", "new table\n")
    assert "new table" in renewed and "old table" not in renewed
    assert renewed.startswith("# Bench\n\nintro\n\n") and renewed.endswith("## Analysis\n\nkept\n")
    both = with_section(renewed, "bench-cluster", "cluster table")
    assert both.endswith("<!-- /bench-cluster -->\n") and "## Analysis" in both
    assert with_section(both, "bench-cluster", "again").count("bench-cluster: written") == 1


def test_a_stopped_run_keeps_its_figures_and_names_the_agents_it_never_reached() -> None:
    log = "\n".join([
        "[bench] booting kernel 7.3: ...",
        "[bench 23:58:00] building 4 iSCSI LUNs x 2 nodes x 2 paths",
        'BENCH {"agent": "fence_pr", "luns": 1, "runs": 5, "wall": 1.4, "cmds_per_lun": 3.0}',
        'BENCH {"agent": "fence_scsi", "luns": 4, "runs": 5, "wall": 8.8, "cmds_per_lun": 14.0}',
        "[bench 00:03:30] fence_scsi 4 LUNs run 5: 8.80 s",
    ])
    results, span = stopped_run(log, ["fence_pr", "fence_scsi", "fence_mpath"], "stopped: time")
    assert span == 330.0  # across midnight
    assert [r for r in results if r.get("agent") == "fence_mpath"] == [
        {"agent": "fence_mpath", "luns": 1, "skipped": "stopped: time"},
        {"agent": "fence_mpath", "luns": 4, "skipped": "stopped: time"}]
    text = table(results, "7.3", span)
    assert "| 4 | fence_mpath | not run: stopped: time | | | |" in text
    assert "| 1 | fence_pr | 1.40 s | 5 | 1.0x | 3.0 |" in text
    assert "multipathd not started, whole bench 6 min." in text
