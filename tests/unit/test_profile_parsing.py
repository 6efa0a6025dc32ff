"""`make profile`'s readers (tests/lab/tools/profile_guest.py): strace's timeline of an agent
and PYTHONPROFILEIMPORTTIME's lines, on output captured from the real tools."""
# ruff: noqa: E501 - the captured lines are kept whole

from __future__ import annotations

import pytest

from tests.lab.tools.profile import summary
from tests.lab.tools.profile_guest import import_times, parse_strace, phases

# strace -f --seccomp-bpf -ttt -T -qq of a process that forks a child, which takes a lock
# and sends two PR ioctls from a thread (ENOTTY on /dev/null: the timeline is the point).
TRACE = """\
16835 1796586237.322861 execve("/usr/bin/python3", ["/usr/bin/python3", "/tmp/a.py"], 0x7ffef113e0b0 /* 35 vars */) = 0 <0.000261>
16835 1796586237.342369 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, child_tidptr=0x7ff2d5b80590) = 16836 <0.000342>
16836 1796586237.344081 flock(3, LOCK_EX) = 0 <0.000010>
16836 1796586237.344359 clone3({flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM|CLONE_SETTLS|CLONE_PARENT_SETTID|CLONE_CHILD_CLEARTID, child_tid=0x7ff2d58c5990, parent_tid=0x7ff2d58c5990, exit_signal=0, stack=0x7ff2d50c5000, stack_size=0x7fff80, tls=0x7ff2d58c56c0} => {parent_tid=[16837]}, 88) = 16837 <0.000042>
16837 1796586237.347628 ioctl(4, IOC_PR_REGISTER, 0x7ff2d58c45df) = -1 ENOTTY (Inappropriate ioctl for device) <0.000008>
16837 1796586237.347697 ioctl(4, IOC_PR_PREEMPT_ABORT <unfinished ...>
16836 1796586237.347700 ioctl(2, TCGETS, 0x7ffd) = -1 ENOTTY (Inappropriate ioctl for device) <0.000003>
16837 1796586237.347750 <... ioctl resumed>, 0x7ff2d58c45df) = -1 ENOTTY (Inappropriate ioctl for device) <0.000050>
16836 1796586237.347882 exit_group(0)   = ?
16835 1796586237.348272 --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED, si_pid=16836, si_uid=0, si_status=0, si_utime=0, si_stime=0} ---
16835 1796586237.351350 exit_group(0)   = ?
"""


def near(seconds: float) -> object:
    """Equal to the microsecond strace prints (epoch timestamps leave float noise below)."""
    return pytest.approx(seconds, abs=1e-6)


def test_the_timeline_of_an_agent_and_its_deadline_child() -> None:
    got = phases(parse_strace(TRACE))
    assert got["start to fork (interpreter, fencing.py, options)"] == near(0.019508)
    assert got["fork to lock (child's imports, plan, discovery)"] == near(0.001712)
    assert got["lock to first PR command"] == near(0.003537)
    assert got["PR commands"] == 2  # the tty ioctl is not one
    assert got["first to last PR command"] == near(0.347747 - 0.347628)
    assert got["in PR commands (sum)"] == near(0.000008 + 0.000050)
    assert got["last PR command to child's exit"] == near(0.347882 - 0.347747)
    assert got["child's exit to agent's exit"] == near(0.003468)
    assert got["whole (traced)"] == near(0.028489)


def test_a_trace_without_a_fork_has_only_what_it_shows() -> None:
    assert phases(parse_strace(TRACE.splitlines()[0] + "\n")) == {}
    assert phases(parse_strace("")) == {}


IMPORTS = """\
import time: self [us] | cumulative | imported package
import time:       654 |      35096 | fencing
import time:     11904 |      11904 |   pycurl
import time:      1004 |      16581 |     tenacity
import time:       443 |      17023 | fence_pr.policies
import time:      3350 |      20372 | fence_pr.engine
Failed: something the agent said on stderr
"""


def test_top_level_imports_only_slowest_first() -> None:
    assert import_times(IMPORTS) == [("fencing", 0.035096), ("fence_pr.engine", 0.020372),
                                     ("fence_pr.policies", 0.017023)]
    assert import_times(IMPORTS, top=1) == [("fencing", 0.035096)]


def test_the_summary_reads_each_kind_of_line() -> None:
    text = summary([
        {"floors": {"python3 -S -c pass": 0.12}, "kernel": "7.3.4"},
        {"luns": 1, "wall": 1.234},
        {"luns": 1, "rc": 0, "imports": [["fencing", 0.3]]},
        {"luns": 1, "phases": {"PR commands": 3.0, "lock to first PR command": 0.05}},
    ])
    assert text.splitlines() == [
        "floors (median), kernel 7.3.4:", "  python3 -S -c pass: 120 ms",
        "1 LUN(s): off, untraced, median 1234 ms",
        "1 LUN(s): slowest top-level imports (cumulative, exit 0):", "  fencing: 300 ms",
        "1 LUN(s): phases under strace (median of 3):", "  PR commands: 3",
        "  lock to first PR command: 50 ms"]
