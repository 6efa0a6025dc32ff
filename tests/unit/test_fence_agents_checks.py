"""fence-agents' own build checks (`make check` in its agents/: make/agentpycheck.mk and
lib/check_used_options.py of release 4.12.1, Debian 12's), applied to fence_pr with the
files Debian's fence-agents installs, so the agent stays one fence-agents would take:

- rng-check: the metadata through fence2rng.xsl is well-formed XML;
- delay-check: `delay=10` with the build's FENCE_TEST_ARGS on stdin takes at least 10 s;
- check_used_options: every `--option` the code reads is one the option table declares;
- tests/fence_testing.py's idea: the same options given on stdin, as short options and as
  long options give the same result.
(metadata.rng validation and the metadata's golden copy: test_metadata.py.)
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.badinput import AGENT

ROOT = Path(__file__).resolve().parents[2]
RELAXNG = Path("/usr/share/cluster/relaxng")
METADATA = (ROOT / "metadata/fence_pr.xml").read_text()
# agents/Makefile.am's FENCE_TEST_ARGS in fence-agents 4.12.1: one set for every agent.
FENCE_TEST_ARGS = ("login=test\npasswd=test\nipaddr=test\nport=1\nmanaged=1\ndevices=test\n"
                   "session_url=http://test\nemail=test@test.te\nping_targets=localhost\n")


def test_fence2rng_makes_well_formed_xml() -> None:
    rng = subprocess.run(["xsltproc", str(RELAXNG / "fence2rng.xsl"), "-"], input=METADATA,
                         capture_output=True, text=True, check=True).stdout
    rng = rng.replace(" rha:description=", " description=").replace(" rha:name=", " name=")
    r = subprocess.run(["xmllint", "--nsclean", "--noout", "-"], input=rng,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert 'name="devices"' in rng and 'name="key_value"' in rng, rng[:2000]


def test_delay_10_takes_at_least_10_s() -> None:
    t0 = time.monotonic()
    r = subprocess.run([AGENT], input="delay=10\n" + FENCE_TEST_ARGS, capture_output=True,
                       text=True, timeout=120)
    took = time.monotonic() - t0
    assert took >= 10, f"delay=10 returned after {took:.1f}s: {r.stderr}"
    assert r.returncode == 1, r.stderr  # and then fails: `test` is no device, no keys


def declared_longopts() -> set[str]:
    """`--longopt` of every option fence_pr's table declares (fencing.py's included)."""
    code = ("import sys; sys.path.append('/usr/share/fence'); import fencing; "
            "from fence_pr.fencing_agent import define_options; "
            "define_options(fencing.all_opt); "
            "print('\\n'.join(o['longopt'] for o in fencing.all_opt.values() "
            "if 'longopt' in o))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    return {"--" + line for line in out.split()}


def test_every_option_the_code_reads_is_declared() -> None:
    """check_used_options.py's rule, over the whole package (it reads options in several
    modules, and with .get() too)."""
    use = re.compile(r'options(?:\.get\(|\[)\s*"(--[^"{]+)"'
                     r'|(?<![fF])"(--[^"{]+)"\s+(?:not\s+)?in\s+options')
    declared = declared_longopts()
    undeclared = []
    for py in sorted((ROOT / "fence_pr").rglob("*.py")):
        for n, line in enumerate(py.read_text().splitlines(), start=1):
            for m in use.finditer(line):
                name = m.group(1) or m.group(2)
                if name not in declared:
                    undeclared.append(f"{py.relative_to(ROOT)}:{n}: {name}")
    assert not undeclared, "options read but not declared:\n" + "\n".join(undeclared)


def spellings() -> dict[str, tuple[str | None, str]]:
    """Parameter name -> (short option or None, long option), from the metadata."""
    out: dict[str, tuple[str | None, str]] = {}
    for p in ET.fromstring(METADATA).iter("parameter"):
        g = p.find("getopt")
        assert g is not None
        parts = [s.strip() for s in re.split(r"[=\[<]", g.attrib["mixed"])[0].split(",")]
        short = next((s for s in parts if re.fullmatch(r"-\w", s)), None)
        out[p.attrib["name"]] = (short, next(s for s in parts if s.startswith("--")))
    return out


# One run's options: all of them read before any device, none of them a device on this host.
GIVEN = {"action": "validate-all", "devices": "/dev/nonexistent", "node_keys": "a=1,b=2",
         "local_node": "a", "plug": "b", "key_value": "id", "reservation_type": "3",
         "power_timeout": "5", "delay": "0", "corosync_cmap_path": "/nonexistent/cmapctl",
         "vgs_path": "/sbin/vgs", "sg_persist_path": "/usr/bin/sg_persist"}


def result(argv: list[str], stdin: str | None) -> tuple[int, list[str]]:
    r = subprocess.run([AGENT, *argv], input=stdin or "", capture_output=True, text=True,
                       timeout=60)
    # fencing.py's log lines start with a timestamp; the words after it must agree.
    return r.returncode, [re.sub(r"^[\d-]+ [\d:,]+ ", "", line)
                          for line in r.stderr.splitlines()]


def test_stdin_short_and_long_options_agree() -> None:
    spelled = spellings()
    stdin = "".join(f"{k}={v}\n" for k, v in GIVEN.items())
    longs = [a for k, v in GIVEN.items() for a in (spelled[k][1], v)]
    shorts = [a for k, v in GIVEN.items() for a in (spelled[k][0] or spelled[k][1], v)]
    assert any(spelled[k][0] for k in GIVEN), "no short option in the sample"
    by_stdin, by_long, by_short = result([], stdin), result(longs, None), result(shorts, None)
    assert by_stdin == by_long == by_short, (by_stdin, by_long, by_short)
    code, lines = by_stdin
    assert code == 1, lines
    assert lines[-1].endswith("Failed: /dev/nonexistent: No such file or directory"), lines
