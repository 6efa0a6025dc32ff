"""metadata/fence_pr.xml and fence_pr.usage are the golden copies of `fence_pr -o metadata`
and `fence_pr -h`: what fencing.py generates from the option table, served without it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fence_pr import __version__, docs

ROOT = Path(__file__).resolve().parents[2]
RNG = Path("/usr/share/cluster/relaxng/metadata.rng")  # shipped by Debian's fence-agents


def agent_metadata() -> str:
    # The console script, as installed: fencing.py names the agent after argv[0].
    agent = Path(sys.executable).parent / "fence_pr"
    r = subprocess.run([str(agent), "-o", "metadata"],
                       capture_output=True, text=True, cwd=ROOT, check=True)
    return r.stdout


# What the documents must not cost: fencing.py and its imports, the engine's.
HEAVY = ("fencing", "pexpect", "pycurl", "pyudev", "tenacity", "fence_pr.fencing_agent")

PROBE = """
import atexit
import io
import sys
sys.argv = {argv!r}
if {stdin!r} is not None:
    sys.stdin = io.TextIOWrapper(io.BytesIO({stdin!r}.encode()))
atexit.register(lambda: sys.stderr.write(
    "LOADED=" + ",".join(m for m in {heavy!r} if m in sys.modules)))
{call}
"""


def probe(argv: list[str], stdin: str | None = None,
          call: str = "from fence_pr.agent import main; main()") -> tuple[str, list[str]]:
    """stdout of `call` in a fresh interpreter, and which HEAVY modules it had imported
    when it exited."""
    code = PROBE.format(argv=argv, stdin=stdin, heavy=HEAVY, call=call)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert "LOADED=" in r.stderr, r.stderr
    loaded = r.stderr.rsplit("LOADED=", 1)[1].strip()
    return r.stdout, [m for m in loaded.split(",") if m]


def fencing_py_generates(argv: list[str]) -> str:
    out, loaded = probe(argv, call="from fence_pr.fencing_agent import run; run()")
    assert "fencing" in loaded
    return out


def test_golden_metadata_is_what_fencing_py_generates() -> None:
    assert fencing_py_generates(["fence_pr", "-o", "metadata"]) == (
        ROOT / "metadata/fence_pr.xml").read_text(), (
        "regenerate: python -c 'import sys; sys.argv=[\"fence_pr\", \"-o\", \"metadata\"]; "
        "from fence_pr.fencing_agent import run; run()' > metadata/fence_pr.xml")


def test_golden_usage_is_what_fencing_py_generates() -> None:
    assert fencing_py_generates(["fence_pr", "-h"]) == (
        ROOT / "metadata/fence_pr.usage").read_text(), (
        "regenerate as metadata/fence_pr.xml, with -h, into metadata/fence_pr.usage")


@pytest.mark.parametrize(("argv", "stdin", "golden"), [
    (["fence_pr", "-o", "metadata"], None, "fence_pr.xml"),
    (["/usr/sbin/fence_pr", "--action=metadata"], None, "fence_pr.xml"),
    (["fence_pr", "-oMETADATA"], None, "fence_pr.xml"),
    (["fence_pr", "--action", "manpage"], None, "fence_pr.xml"),
    (["fence_pr"], "action=metadata\n", "fence_pr.xml"),  # pacemaker-fenced's form
    (["fence_pr"], '# x\n\naction="metadata"\nport=node2\nbogus=1\n', "fence_pr.xml"),
    (["fence_pr", "-h"], None, "fence_pr.usage"),
    (["fence_pr", "--help"], None, "fence_pr.usage"),
])
def test_documents_are_served_without_fencing_py(argv: list[str], stdin: str | None,
                                                 golden: str) -> None:
    out, loaded = probe(argv, stdin)
    assert out == (ROOT / "metadata" / golden).read_text()
    assert loaded == [], f"{argv} {stdin!r} imported {loaded}"


def test_version_is_fence_prs_own() -> None:
    out, loaded = probe(["fence_pr", "-V"])
    assert out == f"{__version__}\n" and loaded == []


@pytest.mark.parametrize(("argv", "stdin"), [
    (["fence_pr", "-o", "metadata", "-v"], None),  # anything more: fencing.py checks it
    (["fence_pr"], "action=metadata\nhelp=1\n"),  # fencing.py: help wins
    (["fence_agent_copy", "-o", "metadata"], None),  # fencing.py names it after argv[0]
])
def test_anything_else_goes_to_fencing_py(argv: list[str], stdin: str | None) -> None:
    assert docs.request(argv, stdin) is None
    out, loaded = probe(argv, stdin)
    assert "fencing" in loaded
    assert out.startswith(("<?xml", "Usage:")), out[:200]


@pytest.mark.parametrize(("argv", "stdin", "want"), [
    (["fence_pr", "-o", "off"], None, None),
    (["fence_pr", "-o"], None, None),
    (["fence_pr", "-o", "metadata", "-n", "x"], None, None),
    (["fence_pr", "-h", "-V"], None, None),
    (["fence_pr", "-V"], None, "version"),
    (["fence_pr", "--version"], None, "version"),
    (["fence_pr", "--action=Manpage"], None, "manpage"),
    (["fence_pr"], "action=off\n", None),
    (["fence_pr"], "action=metadata\naction=off\n", None),  # the last one counts
    (["fence_pr"], "action=off\naction=metadata\n", "metadata"),
    (["fence_pr"], "  action=metadata  \n", "metadata"),
    (["fence_pr"], 'action="metadata\n', None),
    (["fence_pr"], "version=1\naction=metadata\n", None),
    (["fence_pr"], "", None),
    (["fence_pr"], None, None),
])
def test_request_parsing(argv: list[str], stdin: str | None, want: str | None) -> None:
    assert docs.request(argv, stdin) == want


def test_metadata_matches_golden_copy() -> None:
    golden = (ROOT / "metadata/fence_pr.xml").read_text()
    assert agent_metadata() == golden, "regenerate: fence_pr -o metadata > metadata/fence_pr.xml"


def test_metadata_validates_against_fence_agents_schema(tmp_path: Path) -> None:
    assert RNG.exists(), f"{RNG} missing: install fence-agents (make setup)"
    r = subprocess.run(["xmllint", "--noout", "--relaxng", str(RNG),
                        str(ROOT / "metadata/fence_pr.xml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_metadata_declares_unfencing_and_no_reboot() -> None:
    xml = agent_metadata()
    assert '<action name="on" on_target="1" automatic="1"/>' in xml
    assert '<action name="reboot"' not in xml
    for name in ("devices", "key", "key_value", "port", "plug", "nodename", "logfile",
                 "corosync_cmap_path", "node_keys", "power_timeout"):
        assert f'name="{name}"' in xml, name


def test_man_page_renders_from_metadata() -> None:
    """fence-agents builds man pages from the metadata with fence2man.xsl; so does packaging."""
    xsl = RNG.parent / "fence2man.xsl"
    r = subprocess.run(["xsltproc", str(xsl), str(ROOT / "metadata/fence_pr.xml")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "fence_pr" in r.stdout and "devices" in r.stdout
