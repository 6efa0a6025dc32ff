"""Running the host's tools (corosync-cmapctl, dmsetup, vgs) within the run's budget.

Each call gets what is left of the one budget as its timeout; a tool that does not answer
in time is named with what to check, instead of holding the agent until the hard bound
(bounded.py) kills it without a cause.
"""

from __future__ import annotations

import subprocess

from ..pr.errors import FencePrError


class ToolError(FencePrError, RuntimeError):
    """A host tool could not be run, failed, or did not answer within the budget."""


def run_tool(argv: list[str], *, timeout: float, hint: str, what: str | None = None,
             error: type[ToolError] = ToolError) -> subprocess.CompletedProcess[str]:
    """Run argv, output captured; OSError (no such tool) is left to the caller to judge:
    a missing dmsetup means no maps, a missing corosync-cmapctl means no keys."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        raise error(f"{what or argv[0]} did not answer within {timeout:.1f} s (what was left of "
                    f"power_timeout): {hint}") from None
