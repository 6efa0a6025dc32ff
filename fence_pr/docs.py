"""The answers about the agent itself (metadata, man page, help, version) from the files
the build made, without fencing.py.

pacemaker-fenced runs `metadata` on every device registration and gives it a fixed 10 s,
pcs on every `stonith create`; fencing.py imports pexpect and pycurl, most of a second on a
slow or busy machine, and a fencer that times out registers the device without its
metadata (so without `on_target`: unfencing breaks).  metadata/fence_pr.xml and
metadata/fence_pr.usage are fencing.py's own output for this agent, and a unit test keeps
them equal to what it generates (tests/unit/test_metadata.py).  Anything this module is
not sure of goes to fencing.py as before.  Standard library only, and little of it: this
is the agent's whole start-up for these requests.
"""

from __future__ import annotations

import os

from . import __version__

NAME = "fence_pr"
_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The checkout's golden copies (a development install runs the checkout's code), else
# where the packages put them: <prefix>/lib/python3*/{dist,site}-packages/fence_pr ->
# <prefix>/share/fence_pr.
DATA_DIRS = (os.path.join(_HERE, "metadata"),
             os.path.normpath(os.path.join(_HERE, "..", "..", "..", "share", "fence_pr")))
FILES = {"metadata": "fence_pr.xml", "manpage": "fence_pr.xml", "help": "fence_pr.usage"}
DOC_ACTIONS = ("metadata", "manpage")


def _from_argv(args: list[str]) -> str | None:
    """Only the exact forms one asks for a document with; any other option (a typo, -v,
    a device) goes to fencing.py, which checks it."""
    if args in (["-h"], ["--help"]):
        return "help"
    if args in (["-V"], ["--version"]):
        return "version"
    action = None
    if len(args) == 2 and args[0] in ("-o", "--action"):
        action = args[1]
    elif len(args) == 1 and args[0].startswith(("-o", "--action=")):
        action = args[0].removeprefix("--action=").removeprefix("-o")
    if action is not None and action.lower() in DOC_ACTIONS:
        return action.lower()
    return None


def _from_stdin(text: str) -> str | None:
    """Pacemaker's form: `key=value` lines.  fencing.py answers `action=metadata` whatever
    else is there (it checks nothing for it), unless help or version is asked for too."""
    action = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition("=")
        name = name.replace("-", "_")
        if name in ("help", "version"):
            return None
        if name == "action":
            quoted = len(value) > 1 and value[0] == value[-1] == '"'
            action = value[1:-1] if quoted else value
    if action is not None and action.lower() in DOC_ACTIONS:
        return action.lower()
    return None


def request(argv: list[str], stdin: str | None) -> str | None:
    """Which document the input asks for ("metadata", "manpage", "help", "version"), or
    None.  Like fencing.py: stdin only when there are no arguments."""
    if os.path.basename(argv[0]) != NAME:  # fencing.py names the agent after argv[0]
        return None
    if len(argv) > 1:
        return _from_argv(argv[1:])
    return _from_stdin(stdin or "")


def answer(what: str) -> str | None:
    """The document's text, or None when no installed copy is found (fencing.py then
    generates it)."""
    if what == "version":
        return f"{__version__}\n"
    for d in DATA_DIRS:
        try:
            with open(os.path.join(d, FILES[what]), encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            continue
    return None
