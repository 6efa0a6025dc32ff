"""Tell multipathd this node's key, so paths that appear later are registered.

The kernel never registers a path added to a map after REGISTER; multipathd
does, if it knows the key (`reservation_key file` in multipath.conf, then
`setprkey` and `setprstatus` per map).  Without multipathd, `monitor` reports
the unregistered path and `on` repairs it.
"""

from __future__ import annotations

import logging
import shutil
import subprocess

from ..pr.errors import FencePrError
from ..pr.prtypes import Key
from .budget import Deadline

log = logging.getLogger(__name__)
TIMEOUT_S = 5.0  # each question, at most; never past the run's budget


class MultipathdError(FencePrError, RuntimeError):
    """multipathd refused or could not be asked; the message carries its answer."""


def _ask(*words: str, deadline: Deadline) -> str:
    if shutil.which("multipathd") is None:
        raise MultipathdError("multipathd is not installed")
    try:
        r = subprocess.run(["multipathd", *words], capture_output=True, text=True,
                           timeout=deadline.timeout_s(TIMEOUT_S))
    except (OSError, subprocess.TimeoutExpired) as e:
        raise MultipathdError(f"multipathd {' '.join(words)}: {e}") from None
    out = (r.stdout + r.stderr).strip()
    if r.returncode != 0 or out.startswith(("fail", "error", "can't")):
        raise MultipathdError(f"multipathd {' '.join(words)}: {out or r.returncode}")
    return out


def managed_maps(deadline: Deadline) -> set[str]:
    """Names of the maps a running multipathd manages; empty when it does not run."""
    try:
        return set(_ask("show", "maps", "raw", "format", "%n", deadline=deadline).split())
    except MultipathdError:
        return set()


def set_key(map_name: str, key: Key, deadline: Deadline) -> None:
    """Make multipathd register `key` on every path it adds to `map_name` from now on."""
    answer = _ask("setprkey", "map", map_name, "key", str(key), deadline=deadline)
    if "fail" in answer.lower():
        raise MultipathdError(f"setprkey refused for {map_name}: {answer}; multipath.conf "
                              "needs `reservation_key file`")
    _ask("setprstatus", "map", map_name, deadline=deadline)
