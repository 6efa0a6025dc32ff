"""The Debian package, built from this checkout, and the RPM spec.

packaging/build-deb runs dpkg-buildpackage in a staged copy of the source (a few seconds);
these tests check what the .deb installs and run the packaged agent from an extracted tree.
The RPM spec cannot be built on Debian (no pyproject-rpm-macros), so it is parsed with
rpmspec -P and its file list compared with the .deb's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "packaging/fence_pr.spec"

# What both packages must install (the Python modules are checked separately).
PAYLOAD = {
    "/usr/sbin/fence_pr": "the agent, where Pacemaker looks for fence agents",
    "/usr/sbin/fence_pr_check": "the watchdog check",
    "/usr/share/cluster/fence_pr_check": "the watchdog test hook, next to fence_scsi_check",
    "/usr/share/fence_pr/fence_pr.xml": "the metadata",
    "/usr/share/fence_pr/fence_pr.usage": "the help text (-h)",
    "/usr/share/man/man8/fence_pr.8": "the man page, rendered from the metadata",
    "/usr/share/man/man8/fence_pr_check.8": "the watchdog check's man page",
    "/usr/bin/fence_pr_helper": "the QEMU helper, where qemu-pr-helper is",
    "/usr/share/man/man8/fence_pr_helper.8": "the QEMU helper's man page",
    "/usr/lib/tmpfiles.d/fence-pr.conf": "the node lock's directory (fence_pr/host/lock.py)",
}


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")
    assert path, f"{tool} missing: install {package} (make setup)"
    return path


@dataclass
class Deb:
    path: Path
    tree: Path  # dpkg-deb -x of the package
    files: dict[str, str]  # path -> mode string, from dpkg-deb -c
    control: str  # dpkg-deb -I


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Deb:
    for tool, package in (("dpkg-buildpackage", "dpkg-dev"), ("dh", "debhelper"),
                          ("pybuild", "dh-python")):
        _need(tool, package)
    out = tmp_path_factory.mktemp("deb")
    r = subprocess.run([str(ROOT / "packaging/build-deb"), str(out)], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr + r.stdout
    path = Path(r.stdout.strip().splitlines()[-1])
    listing = subprocess.run(["dpkg-deb", "-c", str(path)], capture_output=True, text=True,
                             check=True).stdout
    files = {}
    for line in listing.splitlines():
        fields = line.split()
        files[fields[5].removeprefix(".")] = fields[0]
    tree = out / "tree"
    subprocess.run(["dpkg-deb", "-x", str(path), str(tree)], check=True)
    control = subprocess.run(["dpkg-deb", "-I", str(path)], capture_output=True, text=True,
                             check=True).stdout
    return Deb(path, tree, files, control)


def _field(control: str, name: str) -> str:
    m = re.search(rf"^ {name}: (.*)$", control, re.M)
    assert m, f"no {name} in dpkg-deb -I:\n{control}"
    return m.group(1)


def test_deb_installs_agent_metadata_man_page_and_watchdog_hook(deb: Deb) -> None:
    for path, what in PAYLOAD.items():
        installed = path + ".gz" if "/man/" in path else path
        assert installed in deb.files, f"{what}: {installed} not in {deb.path.name}"
    for exe in ("/usr/sbin/fence_pr", "/usr/sbin/fence_pr_check",
                "/usr/share/cluster/fence_pr_check"):
        assert deb.files[exe].startswith("-rwxr-xr-x"), (exe, deb.files[exe])
    assert "/usr/share/doc/fence-pr/examples/60-fence_pr.rules" in deb.files
    # Never active on install: an unconfigured check would make watchdog(8) reboot the node.
    assert not any(p.startswith("/etc/watchdog.d") for p in deb.files)


def test_deb_installs_every_module_in_dist_packages(deb: Deb) -> None:
    site = "/usr/lib/python3/dist-packages/fence_pr/"
    modules = sorted(p.name for p in (ROOT / "fence_pr").glob("*.py"))
    assert modules and all(site + m in deb.files for m in modules), sorted(
        m for m in modules if site + m not in deb.files)


def test_deb_is_lintian_clean(deb: Deb) -> None:
    """Every tag lintian knows, pedantic and info included: none is left to justify."""
    lintian = _need("lintian", "lintian")
    r = subprocess.run([lintian, "--pedantic", "--info", "--fail-on", "error,warning,info,"
                        "pedantic", str(deb.path)], capture_output=True, text=True, timeout=600)
    tags = [line for line in r.stdout.splitlines() if re.match(r"^[EWIPXO]: ", line)]
    assert r.returncode == 0 and not tags, r.stdout + r.stderr


def test_deb_control(deb: Deb) -> None:
    assert _field(deb.control, "Package") == "fence-pr"
    assert _field(deb.control, "Architecture") == "all"
    depends = [d.strip() for d in _field(deb.control, "Depends").split(",")]
    for d in ("python3-pyudev", "python3-tenacity", "fence-agents-common | fence-agents"):
        assert d in depends, depends


def _run_packaged(deb: Deb, exe: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run an installed console script through its own #! line, importing fence_pr only
    from the extracted package (fencing.py from the host's fence-agents, as on a node)."""
    site = deb.tree / "usr/lib/python3/dist-packages"
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(deb.tree / exe.lstrip("/")), *args], capture_output=True,
                          text=True, cwd=deb.tree, timeout=60,
                          env=clean | {"PYTHONPATH": str(site), "PATH": "/usr/sbin:/usr/bin"}
                          | env)


def test_packaged_agent_prints_the_golden_metadata(deb: Deb) -> None:
    assert (deb.tree / "usr/sbin/fence_pr").read_text().startswith("#!/usr/bin/python3")
    r = _run_packaged(deb, "/usr/sbin/fence_pr", "-o", "metadata")
    assert r.returncode == 0, r.stderr
    golden = (ROOT / "metadata/fence_pr.xml").read_text()
    assert r.stdout == golden
    assert (deb.tree / "usr/share/fence_pr/fence_pr.xml").read_text() == golden
    r = _run_packaged(deb, "/usr/sbin/fence_pr", "-h")
    assert r.returncode == 0 and r.stdout == (ROOT / "metadata/fence_pr.usage").read_text(), r


def test_packaged_agent_starts_without_site_and_still_reaches_fencing_py(deb: Deb) -> None:
    """The agent's own script (packaging/sbin/fence_pr.in), not the generated one: Python
    without site for the documents; anything else runs site first, then fencing.py (here
    `-v` sends `metadata` there, and a bad option is fencing.py's to refuse)."""
    script = (deb.tree / "usr/sbin/fence_pr").read_text()
    assert script.startswith("#!/usr/bin/python3 -S\n"), script[:80]
    assert 'sys.path.append("/usr/lib/python3/dist-packages")' in script, script
    r = _run_packaged(deb, "/usr/sbin/fence_pr", "-o", "metadata", "-v")
    assert r.returncode == 0 and r.stdout == (ROOT / "metadata/fence_pr.xml").read_text(), r
    r = _run_packaged(deb, "/usr/sbin/fence_pr", "--no-such-option")
    assert r.returncode == 1 and "no-such-option" in r.stdout + r.stderr, r


def test_packaged_agent_serves_metadata_from_the_installed_copy(deb: Deb) -> None:
    """The packaged agent answers from /usr/share/fence_pr, not by generating: an installed
    copy that says something else is what it prints (this test's marker)."""
    installed = deb.tree / "usr/share/fence_pr/fence_pr.xml"
    golden = installed.read_text()
    try:
        installed.write_text(golden + "<!-- installed copy -->\n")
        r = _run_packaged(deb, "/usr/sbin/fence_pr", "-o", "metadata")
    finally:
        installed.write_text(golden)
    assert r.returncode == 0, r.stderr
    assert r.stdout == golden + "<!-- installed copy -->\n", r.stdout[-200:]


def test_packaged_watchdog_check_exit_codes(deb: Deb, tmp_path: Path) -> None:
    r = _run_packaged(deb, "/usr/sbin/fence_pr_check", "test",
                      FENCE_PR_CHECK_CONF=str(tmp_path / "absent"))
    assert r.returncode == 2 and "no configuration" in r.stderr, r
    r = _run_packaged(deb, "/usr/sbin/fence_pr_check", "repair", "1")
    assert r.returncode == 1, r
    hook = (deb.tree / "usr/share/cluster/fence_pr_check").read_text()
    assert "exec /usr/sbin/fence_pr_check" in hook
    assert subprocess.run(["sh", "-n", str(deb.tree / "usr/share/cluster/fence_pr_check")]
                          ).returncode == 0


def test_man_page_is_the_rendered_metadata(deb: Deb) -> None:
    page = subprocess.run(["gzip", "-dc", str(deb.tree / "usr/share/man/man8/fence_pr.8.gz")],
                          capture_output=True, text=True, check=True).stdout
    assert page.startswith(".TH") or "\n.TH" in page, page[:200]
    for word in ("fence_pr", "devices", "node_keys", "unfencing"):
        assert word in page, word


def test_versions_agree() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    changelog = (ROOT / "packaging/debian/changelog").read_text().splitlines()[0]
    assert changelog.startswith(f"fence-pr ({version})"), changelog
    assert re.search(rf"^Version:\s+{re.escape(version)}$", SPEC.read_text(), re.M)


def test_rpm_spec_parses_and_installs_what_the_deb_does(deb: Deb) -> None:
    rpmspec = _need("rpmspec", "rpm")
    r = subprocess.run([rpmspec, "-P", str(SPEC)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    files = r.stdout.partition("\n%files")[2].partition("\n%changelog")[0]
    assert files, r.stdout
    for path in PAYLOAD:
        assert re.search(rf"^{re.escape(path)}\*?$", files, re.M), (path, files)
    assert re.search(r"^Requires:.*python3-pyudev.*python3-tenacity.*fence-agents-common",
                     r.stdout, re.M), r.stdout
    assert "/usr/share/cluster/relaxng/fence2man.xsl metadata/fence_pr.xml" in r.stdout
