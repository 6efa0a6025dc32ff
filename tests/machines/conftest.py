"""Machine-lab scenarios (issue 15) run on the host: each boots its own QEMU machines
(tests/lab/machines).  They are marked `lab` so that `make unit` leaves them out, and
`machines`: `make machines` runs them.  A machine lab that cannot start fails the test with
what was missing, never skips it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.lab.machines.lab import MachineLab

HERE = Path(__file__).parent
IMAGE = os.environ.get("LAB_MACHINE_IMAGE", "debian12")
OUT = Path("lab-out")
# scenario -> {"outcome": passed|failed, <what>: seconds}: lab-out/machines-<image>.json,
# from which `python -m tests.lab.machines.table` writes docs/cluster.md's table.
RESULTS: dict[str, dict[str, object]] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.lab)
            item.add_marker(pytest.mark.machines)


def started(request: pytest.FixtureRequest, nodes: int) -> Iterator[MachineLab]:
    if os.geteuid() != 0:
        pytest.fail("the machine lab needs root (network namespaces, taps)", pytrace=False)
    lab = MachineLab(IMAGE, nodes=nodes, luns=2)
    try:
        lab.start()
    except BaseException:
        print(lab.diagnostics())
        lab.stop()
        raise
    yield lab
    if request.session.testsfailed:
        print(lab.diagnostics())
    lab.stop()


@pytest.fixture(scope="module")
def machine_lab(request: pytest.FixtureRequest) -> Iterator[MachineLab]:
    """Storage plus two Debian nodes, started and every node unfenced."""
    yield from started(request, 2)


@pytest.fixture(scope="module")
def machine_lab3(request: pytest.FixtureRequest) -> Iterator[MachineLab]:
    """Storage plus three Debian nodes (quorum without two_node), every node unfenced."""
    yield from started(request, 3)


@pytest.fixture
def latency(request: pytest.FixtureRequest) -> Callable[[str, float], None]:
    """Record how long one step of this scenario took (seconds, host clock)."""
    def record(what: str, seconds: float) -> None:
        RESULTS.setdefault(request.node.name, {})[what] = round(seconds, 1)
    return record


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if HERE in Path(report.fspath).resolve().parents and (report.when == "call" or report.failed):
        RESULTS.setdefault(report.head_line or report.nodeid, {})["outcome"] = report.outcome


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Merge into what earlier sessions on this image recorded, so that running the files
    one at a time still fills the whole table."""
    if RESULTS:
        OUT.mkdir(exist_ok=True)
        path = OUT / f"machines-{IMAGE}.json"
        old = json.loads(path.read_text())["scenarios"] if path.exists() else {}
        path.write_text(json.dumps({"image": IMAGE, "scenarios": {**old, **RESULTS}},
                                   indent=1) + "\n")
