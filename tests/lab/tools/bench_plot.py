"""`make bench-plot` (and the end of `make bench`): docs/bench.svg from docs/bench-results.json,
wall time against LUNs, log-log, one line per agent and action, drawn with matplotlib (the
`bench` extra in pyproject.toml)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[3]
RAW = PROJECT / "docs/bench-results.json"
SVG = PROJECT / "docs/bench.svg"
STYLE = {"fence_pr": "o-", "fence_scsi": "s--", "fence_mpath": "^:"}


def series(results: list[dict[str, object]]) -> dict[str, list[tuple[int, float]]]:
    """(LUNs, median wall time) per "agent action", from the bench's rows; rows that were
    not run (`skipped`) have no time and are left out."""
    lines: dict[str, list[tuple[int, float]]] = {}
    for r in results:
        if "agent" not in r or "wall" not in r:
            continue
        name = f"{r['agent']} {r.get('action', 'off')}"
        lines.setdefault(name, []).append((int(str(r["luns"])), float(str(r["wall"]))))
    return {k: sorted(v) for k, v in sorted(lines.items())}


def plot(results: list[dict[str, object]], out: Path = SVG) -> Path:
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    # A fixed hash salt and no date: the same results give the same file, so the svg in git
    # changes only when the figures do.
    matplotlib.rcParams["svg.hashsalt"] = "fence_pr-bench"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, points in series(results).items():
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, STYLE.get(name.split()[0], "x-"), label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("LUNs (x 2 paths each)")
    ax.set_ylabel("wall time, process start to exit (s, median)")
    ax.set_title("Fencing one node off N LUNs in the lab (docs/bench.md)")
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, metadata={"Date": None})
    plt.close(fig)
    return out


def main() -> int:
    results = json.loads(RAW.read_text())["results"]
    out = plot(results)
    print(f"[bench] wrote {out.relative_to(PROJECT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
