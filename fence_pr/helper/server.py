"""The helper's sockets: one thread per QEMU connection, one command at a time on each.

A connection that breaks the protocol (a bad handshake, a short CDB, an opcode other than
0x5e/0x5f, a transfer over 8192 bytes, no descriptor or two) is closed, as QEMU's own helper
closes it; the request is only carried out once it has been read whole, so a client that
goes away mid-request touches no device.  Other clients are served throughout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
from collections.abc import Callable

from . import wire
from .wire import Reply, Violation

log = logging.getLogger(__name__)

Handler = Callable[[int, bytes, bytes], Reply]
"""(descriptor, CDB, parameter list) -> the reply; translate.answer in the daemon."""

MAX_CLIENTS = 256
"""Connections served at once; past it a new one is closed at once (QEMU opens one per
pr-manager object, libvirt one object per domain)."""

_MAX_FDS = 4  # room to see that a client sent more than one


class _Conn:
    """One client socket; collects the descriptors that come with the bytes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fds: list[int] = []

    def read(self, n: int, *, fds_allowed: bool, eof_ok: bool = False) -> bytes | None:
        """Exactly n bytes; None on a clean EOF before the first byte when `eof_ok`."""
        buf = bytearray()
        while len(buf) < n:
            data, fds, flags, _ = socket.recv_fds(self.sock, n - len(buf), _MAX_FDS)
            self.fds.extend(fds)
            if flags & socket.MSG_CTRUNC:
                raise Violation("more descriptors than the protocol allows")
            if fds and not fds_allowed:
                raise Violation("a descriptor outside a CDB")
            if not data:
                if eof_ok and not buf:
                    return None
                raise Violation(f"connection closed after {len(buf)} of {n} bytes")
            buf += data
        return bytes(buf)

    def take_fd(self) -> int:
        if len(self.fds) != 1:
            raise Violation(f"{len(self.fds)} descriptors with a CDB, not exactly one")
        return self.fds.pop()

    def close_fds(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()


def serve_client(sock: socket.socket, handle: Handler) -> None:
    """Handshake, then requests until the client closes or breaks the protocol."""
    conn = _Conn(sock)
    try:
        sock.sendall(wire.FEATURES.pack(0))
        requested = conn.read(wire.FEATURES.size, fds_allowed=False)
        assert requested is not None
        if wire.FEATURES.unpack(requested)[0] != 0:
            raise Violation("client asked for features this helper does not have")
        while True:
            cdb = conn.read(wire.CDB_SIZE, fds_allowed=True, eof_ok=True)
            if cdb is None:
                return
            size = wire.transfer_length(cdb)
            fd = conn.take_fd()
            try:
                params = b""
                if cdb[0] == wire.PERSISTENT_RESERVE_OUT:
                    params = conn.read(size, fds_allowed=False) or b""
                reply = handle(fd, cdb, params)
            finally:
                os.close(fd)
            sock.sendall(reply.encode())
    except Violation as e:
        log.info("closing a client connection: %s", e)
    except OSError as e:
        log.info("client connection lost: %s", e)
    finally:
        conn.close_fds()
        sock.close()


class Server:
    """Accepts on one listening socket until stop(); each client in its own thread."""

    def __init__(self, listener: socket.socket, handle: Handler) -> None:
        self.listener = listener
        self.handle = handle
        self._clients: dict[threading.Thread, socket.socket] = {}
        self._lock = threading.Lock()
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    @property
    def wakeup_fd(self) -> int:
        """Write a byte here (signal.set_wakeup_fd does) to stop serving."""
        return self._stop_w

    def connected(self) -> int:
        """Clients being served now."""
        with self._lock:
            return len(self._clients)

    def stop(self) -> None:
        os.write(self._stop_w, b"x")

    def serve(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.listener, selectors.EVENT_READ)
            sel.register(self._stop_r, selectors.EVENT_READ)
            while True:
                ready = {key.fileobj for key, _ in sel.select()}
                if self._stop_r in ready:
                    break
                self._accept()
        with self._lock:
            clients = dict(self._clients)
        for sock in clients.values():
            # An idle client's read ends; a command under way finishes and is answered.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)
        for t in clients:
            t.join()

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError as e:
            log.warning("accept: %s", e)
            return
        with self._lock:
            if len(self._clients) >= MAX_CLIENTS:
                log.warning("%d clients already connected: closing a new one", MAX_CLIENTS)
                sock.close()
                return
            t = threading.Thread(target=self._run, args=(sock,), daemon=True)
            self._clients[t] = sock
        t.start()

    def _run(self, sock: socket.socket) -> None:
        try:
            serve_client(sock, self.handle)
        finally:
            with self._lock:
                self._clients.pop(threading.current_thread(), None)
