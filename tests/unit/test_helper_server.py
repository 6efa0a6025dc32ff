"""The helper's connection handling over a real unix socket, with the real request handler
(translate.answer, LogicalUnit.from_fd) and descriptors that are no block device (/dev/null,
a pipe, a file, a directory): bad input closes the connection or is refused, the helper goes
on serving, no descriptor leaks, nothing raises in a server thread, and no device is
touched, since none is ever handed over.  FENCE_PR_HELPER_FUZZ cases: a few hundred in CI,
10,000 in `make reliability`.  That the commands act on real LUNs is the lab's to show.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fence_pr.helper import translate, wire
from fence_pr.helper.server import Handler, Server
from fence_pr.lu import LogicalUnit, Registered
from fence_pr.pr.errors import PathFailure, ReservationConflict
from fence_pr.pr.prtypes import NO_KEY, Key, PrType

N = int(os.environ.get("FENCE_PR_HELPER_FUZZ", "300"))
_TMP = tempfile.TemporaryDirectory(prefix="fence_pr-helper-test-")
_FILE = os.path.join(_TMP.name, "file")
open(_FILE, "w").close()


def _not_a_device(n: int, kind: int) -> list[int]:
    """n descriptors, none a block device: /dev/null, a pipe, a file or a directory."""
    out = []
    for i in range(n):
        k = (kind + i) % 4
        if k == 1:
            r, w = os.pipe()
            os.close(w)
            out.append(r)
        else:
            out.append(os.open(("/dev/null", "", _FILE, _TMP.name)[k],
                               os.O_RDONLY if k == 3 else os.O_RDWR))
    return out


def _answer(fd: int, cdb: bytes, params: bytes) -> wire.Reply:
    return translate.answer(fd, cdb, params, open_lu=lambda f: LogicalUnit.from_fd(f, timeout=5))


@dataclass
class Running:
    path: str
    server: Server
    thread: threading.Thread
    errors: list[BaseException]


@contextlib.contextmanager
def serving(handler: Handler, name: str) -> Iterator[Running]:
    path = os.path.join(_TMP.name, name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    errors: list[BaseException] = []
    old_hook = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value or RuntimeError())
    server = Server(listener, handler)
    t = threading.Thread(target=server.serve, daemon=True)
    t.start()
    try:
        yield Running(path, server, t, errors)
    finally:
        server.stop()
        t.join(30)
        threading.excepthook = old_hook
        listener.close()
        os.unlink(path)
    assert not t.is_alive(), "the helper did not stop"


@pytest.fixture(scope="module")
def helper() -> Iterator[Running]:
    with serving(_answer, "helper.sock") as running:
        yield running


def settled(running: Running) -> int:
    """Open descriptors once the helper has let go of every client (it closes a client's
    socket just after the client closes its own)."""
    end = time.monotonic() + 10
    while running.server.connected() and time.monotonic() < end:
        time.sleep(0.005)
    assert running.server.connected() == 0, "the helper still holds a closed client"
    return len(os.listdir("/proc/self/fd"))


def connect(path: str, handshake: bool = True) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(path)
    if handshake:
        assert recv_all(s, 4) == bytes(4)
        s.sendall(bytes(4))
    return s


def recv_all(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def send(s: socket.socket, data: bytes, fds: list[int] | None = None) -> None:
    socket.send_fds(s, [data], fds or []) if fds else s.sendall(data)


def report_capabilities() -> bytes:
    return bytes([0x5E, 2, 0, 0, 0, 0, 0, 0, 8]) + bytes(7)


def closed(s: socket.socket) -> bool:
    return s.recv(1) == b""


def test_handshake_then_a_request_on_something_not_a_disk_is_refused(
        helper: Running) -> None:
    with connect(helper.path) as s:
        fd = os.open("/dev/null", os.O_RDONLY)
        send(s, report_capabilities(), [fd])
        os.close(fd)
        head = recv_all(s, 104)
        status, size = struct.unpack(">ii", head[:8])
        assert (status, size, head[10], head[20]) == (2, 0, 0x05, 0x20), head[:24]
        # The connection stays up: a second request is answered too.
        fd = os.open("/dev/null", os.O_RDONLY)
        send(s, report_capabilities(), [fd])
        os.close(fd)
        assert len(recv_all(s, 104)) == 104


@pytest.mark.parametrize(("name", "stream", "nfds"), [
    ("features asked for", struct.pack(">I", 1), 0),
    ("opcode not 0x5e/0x5f", bytes([0x12]) + bytes(15), 1),
    ("no descriptor", report_capabilities(), 0),
    ("two descriptors", report_capabilities(), 2),
    ("allocation length over 8192", bytes([0x5E, 0, 0, 0, 0, 0, 0, 0x20, 0x01]) + bytes(7), 1),
    ("parameter list over 8192", bytes([0x5F, 0, 0, 0, 0, 0, 0, 0x20, 0x01]) + bytes(7), 1),
])
def test_protocol_violations_close_the_connection_and_the_helper_serves_on(
        helper: Running, name: str, stream: bytes, nfds: int) -> None:
    before = settled(helper)
    with connect(helper.path, handshake=name != "features asked for") as s:
        if name == "features asked for":
            assert recv_all(s, 4) == bytes(4)
        fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(nfds)]
        send(s, stream, fds)
        for fd in fds:
            os.close(fd)
        assert closed(s), name
    with connect(helper.path) as s:  # the next client is served
        fd = os.open("/dev/null", os.O_RDONLY)
        send(s, report_capabilities(), [fd])
        os.close(fd)
        assert len(recv_all(s, 104)) == 104
    assert settled(helper) <= before, "a descriptor leaked"
    assert helper.errors == []


def test_a_client_gone_mid_request_gets_nothing_done() -> None:
    calls: list[bytes] = []

    def record(fd: int, cdb: bytes, params: bytes) -> wire.Reply:
        calls.append(cdb)
        return wire.Reply(wire.Status.GOOD)
    with serving(record, "recording.sock") as running:
        s = connect(running.path)
        fd = os.open("/dev/null", os.O_RDWR)
        # PR OUT announcing 24 bytes of parameters, then only 10 and away.
        send(s, bytes([0x5F, 0, 0, 0, 0, 0, 0, 0, 24]) + bytes(7), [fd])
        os.close(fd)
        s.sendall(bytes(10))
        s.close()
        with connect(running.path) as s2:  # served, and the handler sees only this one
            fd = os.open("/dev/null", os.O_RDONLY)
            send(s2, report_capabilities(), [fd])
            os.close(fd)
            assert len(recv_all(s2, 104)) == 104
    assert calls == [report_capabilities()] and running.errors == []


def test_pr_out_on_a_read_only_descriptor_is_refused_before_anything_else() -> None:
    def never(fd: int) -> LogicalUnit:
        raise AssertionError("a read-only descriptor reached the device")
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        cdb = bytes([0x5F, 0, 0, 0, 0, 0, 0, 0, 24]) + bytes(7)
        reply = translate.answer(fd, cdb, bytes(24), open_lu=never)
    finally:
        os.close(fd)
    assert reply == wire.check_condition(wire.INVALID_OPCODE)


class _Recording(LogicalUnit):
    """Stands in for the LU only to show which engine call a CDB becomes and how an
    outcome is answered (the error mapping); the lab shows the calls act on real LUNs."""

    def __init__(self, raise_: Exception | None = None) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.raise_ = raise_

    def _do(self, *call: object) -> None:
        self.calls.append(call)
        if self.raise_:
            raise self.raise_

    def register(self, new_key: Key, *, old_key: Key = NO_KEY,
                 ignore_existing: bool = True) -> Registered:
        self._do("register", old_key, new_key, ignore_existing)
        return Registered(("/dev/sdx",), ())

    def reserve(self, key: Key, pr_type: PrType) -> None:
        self._do("reserve", key, pr_type)

    def release(self, key: Key, pr_type: PrType) -> None:
        self._do("release", key, pr_type)

    def clear(self, key: Key) -> None:
        self._do("clear", key)

    def preempt(self, key: Key, victim: Key, pr_type: PrType, *, abort: bool = True) -> None:
        self._do("preempt", key, victim, pr_type, abort)


def _out(action: int, type_code: int, key: int, sa_key: int, lu: _Recording) -> wire.Reply:
    cdb = bytes([0x5F, action, type_code, 0, 0, 0, 0, 0, 24]) + bytes(7)
    fd = os.open("/dev/null", os.O_RDWR)
    try:
        return translate.answer(fd, cdb, struct.pack(">QQ", key, sa_key) + bytes(8),
                                open_lu=lambda _: lu)
    finally:
        os.close(fd)


def test_each_pr_out_action_becomes_its_engine_call() -> None:
    lu = _Recording()
    for action in range(7):
        assert _out(action, 5, 0x11, 0x22, lu).status is wire.Status.GOOD
    we_ro = PrType.WRITE_EXCLUSIVE_REG_ONLY
    assert lu.calls == [("register", 0x11, 0x22, False), ("reserve", 0x11, we_ro),
                        ("release", 0x11, we_ro), ("clear", 0x11),
                        ("preempt", 0x11, 0x22, we_ro, False),
                        ("preempt", 0x11, 0x22, we_ro, True),
                        ("register", 0x11, 0x22, True)]


def test_outcomes_become_status_and_sense() -> None:
    conflict = _out(1, 5, 1, 0, _Recording(ReservationConflict("x", code=0x18, op="reserve",
                                                               device="d")))
    assert conflict == wire.Reply(wire.Status.RESERVATION_CONFLICT)
    assert conflict.encode()[8:] == bytes(96)  # no sense with RESERVATION CONFLICT
    failed = _out(1, 5, 1, 0, _Recording(PathFailure("x", code=0x10000, op="reserve",
                                                     device="d")))
    assert failed == wire.check_condition(wire.LUN_COMM_FAILURE)


# ---- fuzz ----------------------------------------------------------------------------------

def _request() -> st.SearchStrategy[tuple[bytes, int]]:
    opcode = st.sampled_from([0x5E, 0x5F, 0x00, 0x12, 0xFF])
    length = st.sampled_from([0, 8, 23, 24, 28, 8192, 8193, 0xFFFF, 0xFFFFFFFF])
    rest = st.binary(min_size=15, max_size=15)

    def build(op: int, n: int, tail: bytes, extra: bytes, cut: int | None, nfds: int
              ) -> tuple[bytes, int]:
        cdb = bytearray([op]) + bytearray(tail)
        if op == 0x5F:
            cdb[5:9] = (n & 0xFFFFFFFF).to_bytes(4, "big")
        else:
            cdb[7:9] = (n & 0xFFFF).to_bytes(2, "big")
        data = bytes(cdb) + extra
        return (data[:cut] if cut is not None else data), nfds
    return st.builds(build, opcode, length, rest, st.binary(max_size=64),
                     st.none() | st.integers(0, 40), st.sampled_from([0, 1, 1, 1, 2]))


@settings(max_examples=N, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(handshake=st.sampled_from([bytes(4), bytes(4), struct.pack(">I", 1), b"\0\0"]),
       requests=st.lists(_request(), max_size=4), garbage=st.binary(max_size=32))
def test_fuzz_the_wire(helper: Running, handshake: bytes, requests: list[tuple[bytes, int]],
                       garbage: bytes) -> None:
    before = settled(helper)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(helper.path)
        try:
            s.sendall(handshake)
            for i, (data, nfds) in enumerate(requests):
                fds = _not_a_device(nfds, i)
                try:
                    send(s, data, fds)
                finally:
                    for fd in fds:
                        os.close(fd)
            s.sendall(garbage)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the helper closed first: allowed
        try:
            while s.recv(65536):
                pass  # replies, then EOF: the helper never hangs on a client
        except ConnectionResetError:
            pass
    with connect(helper.path) as s:
        fd = os.open("/dev/null", os.O_RDONLY)
        send(s, report_capabilities(), [fd])
        os.close(fd)
        assert len(recv_all(s, 104)) == 104, "the helper stopped serving"
    assert helper.errors == []
    assert settled(helper) <= before, "a descriptor leaked"

