"""The folders are the layers, and data flows one way: no module imports one above it.

Read from the source (ast), so a lazy import inside a function counts as much as one at
the top.  The order is the README's ("Code").
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "fence_pr"

LAYERS = [
    ["fence_pr", "fence_pr.pr"],  # the pr.h binding, its fallbacks, types, the error table
    ["fence_pr.host"],  # budget, the bound, the lock; corosync, dm, lvm, multipathd
    ["fence_pr.devices", "fence_pr.keys"],  # the device model, keys
    ["fence_pr.policies", "fence_pr.engine", "fence_pr.lu"],  # the engine, its public API
    ["fence_pr.plan"],
    ["fence_pr.actions"],
    ["fence_pr.docs", "fence_pr.fencing_agent", "fence_pr.agent", "fence_pr.watchdog",
     "fence_pr.helper"],
]


def layer(module: str) -> int:
    """The layer of a module: its own name or the longest package prefix listed."""
    best = (-1, -1)
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best[1]:
                best = (i, len(name))
    assert best[0] >= 0, f"{module} is in no layer: add it to LAYERS"
    return best[0]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(source: str, package: str, top: str) -> set[str]:
    """Modules under the top-level package `top` that a source in `package` imports,
    relative imports resolved."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != top:
                continue
            for alias in node.names:  # `from . import engine` names a module
                sub = f"{base}.{alias.name}"
                found.add(sub if (PACKAGE.parent / sub.replace(".", "/")).with_suffix(
                    ".py").exists() else base)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == top}
    return found


def imports(path: Path) -> set[str]:
    """fence_pr modules `path` imports."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return imported(path.read_text(), package, "fence_pr")

def test_no_module_imports_one_above_it() -> None:
    upward = []
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 20
    for path in modules:
        me = module_name(path)
        for other in imports(path):
            if layer(other) > layer(me):
                upward.append(f"{me} (layer {layer(me)}) imports {other} (layer {layer(other)})")
    assert upward == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: a pr module importing the engine is caught."""
    bad = PACKAGE / "pr" / "prh.py"
    tree = imports(bad) | {"fence_pr.engine"}
    assert any(layer(o) > layer(module_name(bad)) for o in tree)
    assert imports(PACKAGE / "host" / "lock.py") == {"fence_pr.pr.errors"}



TESTS = PACKAGE.parent / "tests"
# tests/lab's folders: the host side (runner) imports neither the guest's fixtures nor any
# test, tools and fixtures import no test, and no test imports another.
LAB_GROUPS = {"runner": set(), "fixtures": set(), "tools": {"runner", "fixtures"}}


def imports_in_tests(source: str, package: str) -> set[str]:
    """Dotted tests.* modules a source in `package` imports."""
    return imported(source, package, "tests")

def wrong_imports(rel: Path, imported: set[str]) -> list[str]:
    """What a file at tests/<rel> must not import."""
    wrong = []
    for other in sorted(imported):
        parts = other.split(".")
        if parts[-1].startswith("test_"):
            wrong.append(f"{rel} imports the test {other}")
        side = rel.parts[1] if len(rel.parts) > 2 and rel.parts[0] == "lab" else None
        if side in LAB_GROUPS and len(parts) > 3 and parts[1] == "lab" \
                and parts[2] not in LAB_GROUPS[side] | {side}:
            wrong.append(f"{rel} ({side}) imports {other}")
    return wrong


def test_no_test_imports_another_and_the_lab_folders_keep_their_sides() -> None:
    files = sorted(TESTS.rglob("*.py"))
    assert any(p.parent.name == "runner" for p in files)
    wrong = []
    for path in files:
        rel = path.relative_to(TESTS)
        package = ".".join(("tests", *rel.parts[:-1]))
        wrong += wrong_imports(rel, imports_in_tests(path.read_text(), package))
    assert wrong == []


def test_the_check_sees_a_test_import_and_a_crossed_side() -> None:
    tool = Path("lab/tools/x.py")
    assert wrong_imports(tool, imports_in_tests("from ..agent.test_agent_scsi import a",
                                               "tests.lab.tools"))
    runner = Path("lab/runner/x.py")
    assert wrong_imports(runner, imports_in_tests("from ..fixtures.topology import sh",
                                                 "tests.lab.runner"))
    assert not wrong_imports(runner, imports_in_tests("from .kernels import KERNELS",
                                                     "tests.lab.runner"))
