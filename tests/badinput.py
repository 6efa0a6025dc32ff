"""Hypothesis strategies for hostile fence_pr input: argv as an admin types it, stdin as
pacemaker-fenced sends it.  Plausible options with defects mixed in; junk can by chance
be valid (a key "1", an empty plug), so a case may be accepted -- what must hold is the
exit code, no traceback, and (in the lab) no change on a device when it is refused."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

AGENT = str(Path(sys.executable).parent / "fence_pr")
ACTIONS = ["on", "off", "status", "monitor", "list", "list-status", "validate-all", "reboot"]
OPTIONS = ["action", "devices", "node_keys", "key", "local_node", "plug", "port", "nodename",
           "reservation_type", "power_timeout", "key_value", "logfile", "corosync_cmap_path"]
EXIT_CODES = {0, 1, 2}
MAX_ARG = 100_000

# Devices that must be refused wherever the test runs; the lab adds its partitions and
# loop devices.
BAD_DEVICES = ["/dev/null", "/dev/zero", "/nonexistent/disk", "/tmp", "/etc/hostname",
               "/dev/mapper/no-such-map", "0xdeadbeef", "naa.60000000000000000000000000000000",
               "/dev/disk/by-id/none", ",", "", "/dev/fence_pr-loop-a"]


def symlink_loop(directory: str) -> str:
    a, b = os.path.join(directory, "loop-a"), os.path.join(directory, "loop-b")
    for src, dst in ((b, a), (a, b)):
        if not os.path.islink(dst):
            os.symlink(src, dst)
    return a


@dataclass
class Case:
    argv: list[bytes]
    stdin: bytes | None  # None: getopt; else key=value lines and empty argv
    action: bytes

    def run(self, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        env = dict(os.environ)
        if self.stdin is not None:
            env["PCMK_service"] = "pacemaker-fenced"
        return subprocess.run([AGENT.encode(), *self.argv], input=self.stdin or b"",
                              capture_output=True, env=env, timeout=timeout)


def junk() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=40),
        st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.integers(min_value=-(2**80), max_value=2**80).map(lambda i: str(i).encode()),
        st.sampled_from([b"0x", b"0xffffffffffffffffff", b"-1", b"1e309", b"nan", b"=",
                         b"\xff\xfe", b"node1=0x1,node1=0x2", b"a=0x1,b=0x1", b"\x00"]),
        st.integers(min_value=1000, max_value=100_000).map(lambda n: b"x" * n),
    )


def device_list(extra: list[str]) -> st.SearchStrategy[bytes]:
    one = st.one_of(st.sampled_from(BAD_DEVICES + extra).map(str.encode), junk())
    return st.lists(one, min_size=1, max_size=4).map(lambda ds: b",".join(ds))


@st.composite
def cases(draw: st.DrawFn, bad_devices: list[str], good_devices: list[str],
          node_keys: str) -> Case:
    """Mostly plausible options with one or more defects among them."""
    pairs: list[tuple[bytes, bytes]] = [(b"action", draw(st.one_of(
        st.sampled_from(ACTIONS).map(str.encode), junk())))]
    good = {b"devices": ",".join(good_devices).encode(), b"node_keys": node_keys.encode(),
            b"local_node": b"node1", b"plug": b"node2"}
    defects = draw(st.lists(st.sampled_from(
        ["devices", "node_keys", "key", "unknown", "local_node", "plug", "number", "junkline"]),
        min_size=1, max_size=3, unique=True))
    for name, value in good.items():
        pairs.append((name, value))
    for d in defects:
        if d == "devices":
            pairs.append((b"devices", draw(device_list(bad_devices))))
        elif d == "node_keys":
            pairs.append((b"node_keys", draw(junk())))
        elif d == "key":
            pairs.append((b"key", draw(junk())))
        elif d == "unknown":
            pairs.append((draw(st.text(min_size=1, max_size=12).map(str.encode)), draw(junk())))
        elif d == "local_node":
            pairs.append((b"local_node", draw(st.sampled_from([b"node2", b"nobody"]) | junk())))
        elif d == "plug":
            pairs.append((b"plug", draw(st.sampled_from([b"node1", b"nobody"]) | junk())))
        elif d == "number":
            pairs.append((draw(st.sampled_from([b"reservation_type", b"power_timeout"])),
                          draw(junk())))
        else:
            pairs.append((draw(junk()), b""))
    action = pairs[0][1]
    # A later value replaces an earlier one in both input styles: the defect wins.
    if draw(st.booleans()):
        text = b"".join(k + b"=" + v.replace(b"\n", b" ") + b"\n" for k, v in pairs)
        return Case([], text, action)
    argv: list[bytes] = []
    for k, v in pairs:
        dashed = (b"power_timeout", b"corosync_cmap_path", b"key_value")  # fencing.py's spelling
        flag = b"--" + k.replace(b"_", b"-") if k in dashed else b"--" + k
        if k == b"action":
            flag = b"-o"
        flag = flag.replace(b"\x00", b"")
        # argv cannot carry a NUL, nor one argument over 128 KiB (MAX_ARG_STRLEN).
        argv += [flag, v.replace(b"\x00", b"")[:MAX_ARG]]
    return Case(argv, None, action)


def check(case: Case, result: subprocess.CompletedProcess[bytes]) -> None:
    err = result.stderr.decode(errors="replace")
    assert result.returncode in EXIT_CODES, (case, result.returncode, err[-2000:])
    assert "Traceback" not in err, (case, err[-2000:])
