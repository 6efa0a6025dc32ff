"""The machine lab's table for docs/cluster.md: scenario x userspace, pass/fail and the
latencies each scenario recorded (lab-out/machines-<image>.json, written by
tests/machines/conftest.py), between the markers `make machines` owns.

    python -m tests.lab.machines.table
"""

from __future__ import annotations

import json

from ..runner.vm import PROJECT
from ..tools.bench import with_section
from .image import SUITES

OUT = PROJECT / "lab-out"
DOC = PROJECT / "docs/cluster.md"


def cell(result: dict[str, object] | None) -> str:
    if result is None:
        return "not run"
    figures = ", ".join(f"{k} {v} s" for k, v in result.items() if k != "outcome")
    return f"{result.get('outcome', '?')}" + (f": {figures}" if figures else "")


def table(runs: dict[str, dict[str, dict[str, object]]]) -> str:
    """Markdown: one row per scenario, one column per image that ran."""
    images = [i for i in SUITES if i in runs]
    scenarios = sorted({s for r in runs.values() for s in r})
    head = "| scenario | " + " | ".join(images) + " |\n|---|" + "---|" * len(images) + "\n"
    rows = "".join(f"| {s} | " + " | ".join(cell(runs[i].get(s)) for i in images) + " |\n"
                   for s in scenarios)
    return head + rows


def main() -> None:
    runs = {}
    for image in SUITES:
        f = OUT / f"machines-{image}.json"
        if f.exists():
            runs[image] = json.loads(f.read_text())["scenarios"]
    if not runs:
        raise SystemExit("no lab-out/machines-*.json: run `make machines` first")
    text = table(runs)
    print(text)
    DOC.write_text(with_section(DOC.read_text(), "machines", text))


if __name__ == "__main__":
    main()
