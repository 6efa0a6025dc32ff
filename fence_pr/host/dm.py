"""device-mapper's own view of multipath maps: which paths dm holds active or failed, from
`dmsetup status` (one process for every map), within the run's budget."""

from __future__ import annotations

import re

from .tools import run_tool


def _dmsetup_status(*names: str, timeout: float) -> str:
    """dm's own status lines; a dmsetup that does not answer within the run's budget is
    named (it blocks on the device-mapper ioctl lock, e.g. behind a suspended map)."""
    try:
        return run_tool(["dmsetup", "status", "--target", "multipath", *names],
                        timeout=timeout, what="dmsetup status",
                        hint="device-mapper is blocked; check for a suspended map "
                             "(dmsetup info)").stdout
    except OSError:
        return ""


def dm_path_states(map_name: str, timeout: float) -> dict[str, str]:
    """major:minor -> 'A' (active) or 'F' (failed), from dm's own status line."""
    return parse_dm_status(_dmsetup_status(map_name, timeout=timeout))


def all_dm_path_states(timeout: float) -> dict[str, dict[str, str]]:
    """map name -> dm_path_states(name) for every multipath map, from one `dmsetup status`
    (one process for 256 maps instead of 256)."""
    return parse_all_dm_status(_dmsetup_status(timeout=timeout))


def parse_all_dm_status(text: str) -> dict[str, dict[str, str]]:
    """`dmsetup status` of several maps: "name: start len target args" per line."""
    out: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(": ")
        if sep and " multipath " in f" {rest} ":
            out.setdefault(name.strip(), {}).update(parse_dm_status(rest))
    return out


def parse_dm_status(line: str) -> dict[str, str]:
    toks = line.split()
    return {t: toks[i + 1] for i, t in enumerate(toks[:-1])
            if re.fullmatch(r"\d+:\d+", t) and toks[i + 1] in ("A", "F")}
