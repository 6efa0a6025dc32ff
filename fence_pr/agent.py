"""fence_pr's entry point: the documents from docs.py, everything else through fencing.py.

`metadata`, `manpage`, `-h` and `-V` are answered from files the build made, with nothing
imported but this module and docs.py: pacemaker-fenced runs `metadata` on every device
registration with a fixed 10 s timeout, and fencing.py (pexpect, pycurl), the plan and the
engine (pyudev, tenacity) take most of a second to import on a slow or busy machine.
"""

from __future__ import annotations

import os
import sys

from . import docs


def _read_stdin() -> str:
    """All of stdin, as fencing.py would read it, with bytes that are not UTF-8 as U+FFFD:
    fencing.py logs bad values to syslog, which cannot encode Python's surrogate escapes
    (a traceback).  The replaced value is then refused like any other unknown one."""
    data = sys.stdin.buffer.read() if sys.stdin is not None else b""
    return data.decode("utf-8", "replace")


def main() -> None:
    sys.argv = [os.fsencode(a).decode("utf-8", "replace") for a in sys.argv]
    stdin = _read_stdin() if len(sys.argv) <= 1 else None
    what = docs.request(sys.argv, stdin)
    text = docs.answer(what) if what else None
    if text is not None:
        sys.stdout.write(text)
        sys.exit(0)
    if sys.flags.no_site:  # the packaged script starts without it, for the documents' sake
        import site

        site.main()
    from .fencing_agent import run

    run(stdin)


if __name__ == "__main__":
    main()
