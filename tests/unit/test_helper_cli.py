"""fence_pr_helper as libvirt starts it: -k, -f, a signal to stop; socket activation; what
it refuses to start on.  The commands themselves: test_helper_server.py and the lab."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

HELPER = [sys.executable, "-m", "fence_pr.helper.main"]
ROOT = Path(__file__).resolve().parents[2]


def _wait_for(what: str, check: object, proc: subprocess.Popen[str], limit: float = 60) -> None:
    """Until check() is true; the helper exiting first, or the limit, fails naming `what`."""
    end = time.monotonic() + limit
    while not check():  # type: ignore[operator]
        if proc.poll() is not None:
            pytest.fail(f"fence_pr_helper exited ({proc.returncode}) before {what}: "
                        f"{proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() > end:
            pytest.fail(f"no {what} after {limit:g} s")
        time.sleep(0.02)


def _handshake(path: str) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(path)
        return s.recv(4)


def test_socket_pidfile_and_a_clean_stop(tmp_path: Path) -> None:
    sock, pid = tmp_path / "h.sock", tmp_path / "h.pid"
    tmp_path.chmod(0o755)
    proc = subprocess.Popen([*HELPER, "-k", str(sock), "-f", str(pid)], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for("the socket", sock.exists, proc)
        assert _handshake(str(sock)) == bytes(4)
        assert pid.read_text().strip() == str(proc.pid)
        assert oct(sock.stat().st_mode & 0o777) == oct(0o660)
        again = subprocess.run([*HELPER, "-k", str(sock)], cwd=ROOT, capture_output=True,
                               text=True, timeout=60)
        assert again.returncode == 1 and "another helper listens on" in again.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
    assert not sock.exists()


def test_refuses_a_socket_another_user_could_replace(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # writable by all, no sticky bit: anyone could swap the socket
    for args, message in ((["-k", "relative.sock"], "must be absolute"),
                          (["-k", str(shared / "h.sock")], "is writable by others")):
        r = subprocess.run([*HELPER, *args], cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 1 and message in r.stderr, r.stderr
    assert not (shared / "h.sock").exists()


def test_systemd_socket_activation(tmp_path: Path) -> None:
    path = str(tmp_path / "activated.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4)
    # LISTEN_PID must be the helper's own pid: set it in the child between fork and exec.
    fd = listener.fileno()

    def as_systemd() -> None:
        os.dup2(fd, 3)
        os.environ["LISTEN_PID"] = str(os.getpid())
        os.environ["LISTEN_FDS"] = "1"

    proc = subprocess.Popen(HELPER, cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            preexec_fn=as_systemd, close_fds=False)
    try:
        assert _handshake(path) == bytes(4)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
        listener.close()
