"""The lab suite's end-of-run failure list (tests/lab/runner/suite.py), fed what a guest prints."""

from __future__ import annotations

import pytest

from tests.lab.runner import suite
from tests.lab.runner.suite import Failures


def test_each_failure_is_named_with_its_first_error_line() -> None:
    f = Failures("A, kernel 7.3")
    for line in ["tests/lab/x.py::test_ok PASSED\n",
                 "\n",
                 "[lab] tests/lab/x.py::test_bad call FAILED:\n",
                 "tests/lab/x.py:12: in test_bad\n",
                 "E   AssertionError: node1 still registered\n",
                 "E   assert 1 == 0\n",
                 "[lab] tests/lab/y.py::test_setup setup FAILED:\n",
                 "E   RuntimeError: no map\n",
                 "[lab] FAILED: lab guest did not finish within 3600s; console tail:\n"]:
        f.feed(line)
    assert f.seen == [
        "[lab] lane A, kernel 7.3: tests/lab/x.py::test_bad call FAILED: "
        "AssertionError: node1 still registered",
        "[lab] lane A, kernel 7.3: tests/lab/y.py::test_setup setup FAILED: RuntimeError: no map",
        "[lab] lane A, kernel 7.3: lab guest did not finish within 3600s; console tail:"]


def test_a_clean_run_names_nothing() -> None:
    f = Failures("B, kernel 6.12")
    f.feed("tests/lab/x.py::test_ok PASSED\n")
    f.feed("E   not after a failure marker\n")
    assert f.seen == []


def test_each_guest_gets_what_is_left_of_the_lab_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lane's second guest gets the time the first left, not a fixed limit of its own."""
    argvs: list[list[str]] = []

    class Guest:
        def __init__(self, argv: list[str], **_: object) -> None:
            argvs.append(argv)
            self.stdout = iter(["tests/lab/x.py::test_ok PASSED\n"])

        def wait(self) -> int:
            return 0

    now = [1000.0]
    monkeypatch.setattr("tests.lab.runner.suite.subprocess.Popen", Guest)
    monkeypatch.setattr("tests.lab.runner.suite.time.monotonic", lambda: now[0])
    results: dict[str, int] = {}
    times: list[str] = []
    suite.run_lane("B", [["--kernel", "7.3"], ["--kernel", "6.12"]], results, times, [],
                   deadline=1000.0 + 3000)
    limits = [next(a for a in argv if a.startswith("--timeout=")) for argv in argvs]
    assert limits == ["--timeout=3000", "--timeout=3000"]  # the clock stood still here
    now[0] = 1000.0 + 2990
    suite.run_lane("A", [["--kernel", "7.3"]], results, times, [], deadline=1000.0 + 3000)
    assert "--timeout=60" in argvs[-1], "a guest always gets a minute to say what failed"
    assert results == {"B": 0, "A": 0}
