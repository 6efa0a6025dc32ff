"""The lab suite's end-of-run failure list (tests/lab/runner/suite.py), fed what a guest prints."""

from __future__ import annotations

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
