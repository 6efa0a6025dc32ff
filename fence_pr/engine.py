"""Persistent-reservation work on Storage: register, fence, verify -- path by path.

The kernel's dm-multipath PR code is incomplete (a REGISTER through a map with
one dead path unregisters every path; PREEMPT_ABORT through a map drops the
abort; new paths are never registered), so this engine talks to the paths
itself and verifies every result by reading the keys back.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from .devices import DevicePath, Storage, Transport
from .host.budget import Deadline
from .policies import call_with_retry
from .pr import prh, prread
from .pr.errors import (
    NotRegistered,
    NotSupported,
    PrError,
    ReservationConflict,
    TransientError,
    exception_for,
)
from .pr.prtypes import Key, KeyList, PrType, Reservation

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class DeviceReport:
    """What happened on one device; `degraded` lists paths left without a registration."""

    storage: Storage
    ok: bool
    message: str
    degraded: list[str] = field(default_factory=list)
    keys: list[Key] = field(default_factory=list)


CAP_SYS_ADMIN = 21


@functools.cache
def _write_mode() -> int:
    """How to open a disk for a PR "out" command.

    The kernel lets CAP_SYS_ADMIN send them on any descriptor and everyone else only on one
    opened for writing (Linux 6.5+). Read-only whenever allowed: closing a write-opened disk
    makes udev rescan it (blkid reads the disk: SCSI commands and CPU for every device fenced).
    """
    try:
        with open("/proc/self/status") as f:
            eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        return os.O_RDWR
    return os.O_RDONLY if eff >> CAP_SYS_ADMIN & 1 else os.O_RDWR


@contextmanager
def _opened(path: DevicePath, *, write: bool) -> Iterator[int]:
    try:
        fd = os.open(path.node, (_write_mode() if write else os.O_RDONLY) | os.O_CLOEXEC)
    except OSError as e:
        raise exception_for(-(e.errno or errno.EIO), op="open", device=path.node) from None
    try:
        yield fd
    finally:
        os.close(fd)


def _on_path(path: DevicePath, fn: Callable[[int], object], *, write: bool) -> None:
    with _opened(path, write=write) as fd:
        fn(fd)


def _first_path(storage: Storage, deadline: Deadline, fn: Callable[[DevicePath], T]) -> T:
    """Run `fn` on the first path that works, best paths first.

    A path failure moves on to the next path at once; only when every path
    failed is the whole sweep retried (with backoff, within the deadline).
    """
    def sweep() -> T:
        last: PrError | None = None
        for path in storage.paths_by_rank():
            try:
                return fn(path)
            except TransientError as e:
                log.info("%s: %s; trying the next path", path.node, e)
                last = e
        assert last is not None
        raise last
    return call_with_retry(deadline, sweep)


def _read(storage: Storage, deadline: Deadline,
          reader: Callable[..., T]) -> T:
    """A read-only query answered by the first path that works."""
    nvme = storage.transport is Transport.NVME

    def read(path: DevicePath) -> T:
        with _opened(path, write=False) as fd:
            return reader(fd, nvme=nvme, device=path.node, timeout_ms=deadline.timeout_ms())
    return _first_path(storage, deadline, read)


def keys_of(storage: Storage, deadline: Deadline) -> KeyList:
    """The device's registrations, from the first path that answers."""
    return _read(storage, deadline, prread.read_keys)


def reservation_of(storage: Storage, deadline: Deadline) -> Reservation:
    """The device's reservation, from the first path that answers."""
    return _read(storage, deadline, prread.read_reservation)


def expected_count(storage: Storage, registered_paths: int) -> int:
    """How often our key must appear: once per registered path on SCSI, once on NVMe."""
    return registered_paths if storage.per_path_registration else min(1, registered_paths)


def register_paths(storage: Storage, old_key: Key, new_key: Key, deadline: Deadline, *,
                   ignore: bool) -> tuple[list[DevicePath], list[str]]:
    """REGISTER on every path of a SCSI LU (each path is its own I_T nexus), on one path of
    an NVMe namespace (the registration is the host's).  Returns the paths registered and
    one line per path left out; raises only when no path was registered.

    Paths dm marked failed are tried too: PR commands go to the sd device itself, and a
    path failed by a unit attention (which every PR change raises) is often fine.  A
    conflict on some paths (registered differently before) leaves those paths out.
    """
    def on(path: DevicePath) -> DevicePath:
        _on_path(path, lambda fd: prh.register(fd, old_key, new_key, ignore_key=ignore,
                                               device=path.node), write=True)
        return path

    done: list[DevicePath] = []
    degraded: list[str] = []
    failures: list[PrError] = []
    if storage.per_path_registration:
        for path in storage.paths_by_rank():
            try:
                done.append(call_with_retry(deadline, functools.partial(on, path),
                                            attempts=3 if path.disk_running else 1))
            except (TransientError, ReservationConflict) as e:
                note = f" ({path.why_not})" if path.why_not else ""
                degraded.append(f"{path.node}: {e}{note}")
                failures.append(e)
    else:
        try:
            done.append(_first_path(storage, deadline, on))
        except TransientError as e:
            degraded.append(f"{storage.node}: {e}")
            failures.append(e)
    if not done:
        # A conflict says more than a dead path: the caller's key is not what it thought.
        raise next((e for e in failures if isinstance(e, ReservationConflict)), failures[0])
    return done, degraded


def on_first_path(storage: Storage, deadline: Deadline,
                  command: Callable[[int, DevicePath], object]) -> None:
    """Send one PR "out" command that acts on the whole LU (RESERVE, RELEASE, CLEAR,
    PREEMPT) through the first path that takes it: a path device, never the map, so
    dm-multipath's own PR code (which drops the abort of PREEMPT AND ABORT) is not in the
    way."""
    def send(path: DevicePath) -> None:
        _on_path(path, lambda fd: command(fd, path), write=True)
    _first_path(storage, deadline, send)


def reserve(storage: Storage, key: Key, pr_type: PrType, deadline: Deadline) -> None:
    on_first_path(storage, deadline,
                  lambda fd, p: prh.reserve(fd, key, pr_type, device=p.node))


def release(storage: Storage, key: Key, pr_type: PrType, deadline: Deadline) -> None:
    on_first_path(storage, deadline,
                  lambda fd, p: prh.release(fd, key, pr_type, device=p.node))


def clear(storage: Storage, key: Key, deadline: Deadline) -> None:
    on_first_path(storage, deadline, lambda fd, p: prh.clear(fd, key, device=p.node))


def preempt(storage: Storage, key: Key, victim: Key, pr_type: PrType, deadline: Deadline, *,
            abort: bool) -> None:
    """PREEMPT (AND ABORT) on a path.  LIO's tcm_loop wedges on PREEMPT AND ABORT: plain
    PREEMPT on its paths (docs/kernel-behaviour.md)."""
    on_first_path(storage, deadline, lambda fd, p: prh.preempt(
        fd, key, victim, pr_type, abort=abort and not p.abort_unsafe, device=p.node))


def register(storage: Storage, key: Key, pr_type: PrType, deadline: Deadline) -> DeviceReport:
    """Unfence: register `key` on every path, reserve if nobody holds a reservation."""
    try:
        # IGNORE_KEY replaces whatever this nexus/host held; with old_key == key NVMe does
        # the same (old_key 0 + IGNORE_KEY is a plain Register there and conflicts).
        done, degraded = register_paths(storage, key, key, deadline, ignore=True)
    except (TransientError, ReservationConflict) as e:
        return DeviceReport(storage, False, f"no path could be registered: {e}", [str(e)])
    reserved = reservation_of(storage, deadline).held
    if not reserved:
        try:
            _on_path(done[0], lambda fd: prh.reserve(fd, key, pr_type, device=done[0].node),
                     write=True)
        except ReservationConflict:
            log.info("%s: another node reserved first", storage)
    keys = keys_of(storage, deadline).keys
    want = expected_count(storage, len(done))
    have = keys.count(key)
    if have < want:
        degraded.append(f"key {key} registered {have} times, expected {want}")
    if have == 0:
        return DeviceReport(storage, False, f"key {key} missing after REGISTER",
                            degraded, keys)
    # Read back only what this run changed: a reservation held before REGISTER still is.
    if not reserved and not reservation_of(storage, deadline).held:
        return DeviceReport(storage, False, "no reservation held after RESERVE", degraded, keys)
    msg = f"registered on {len(done)} of {len(storage.paths)} path(s)"
    return DeviceReport(storage, True, msg, degraded, keys)


def _not_registered(storage: Storage, my_key: Key) -> NotRegistered:
    return NotRegistered(
        f"{storage}: this node's key {my_key} is not registered; it may have "
        "been fenced itself. Refusing to fence; run `on` (unfence) once this node is healthy")


def _strangers(storage: Storage, keys: list[Key], known: frozenset[Key],
               victim: Key) -> DeviceReport | None:
    """The victim's key is not registered: "already off" only if every registration is one
    this configuration knows.  A key it does not know may be the victim's under another key
    scheme (fence_scsi's key_value=id or hash, other node_keys): success then would leave a
    node writing that Pacemaker believes fenced."""
    unknown = sorted(set(keys) - known)
    if not unknown:
        return None
    return DeviceReport(storage, False, f"key {victim} is not registered, but "
                        f"{', '.join(map(str, unknown))} (not this configuration's) "
                        f"{'is' if len(unknown) == 1 else 'are'}: the victim may be registered "
                        "under another key; set key_value or node_keys as the nodes were "
                        "unfenced (fence_scsi's default is key_value=id). Nothing was changed",
                        keys=keys)


def fence(storage: Storage, my_key: Key, victim: Key, pr_type: PrType,
          deadline: Deadline, known: frozenset[Key]) -> DeviceReport:
    """PREEMPT AND ABORT `victim` with our own key, on a path device so the abort is real.

    Three commands per device: PREEMPT, READ KEYS, READ RESERVATION. The PREEMPT goes
    first: the target answers RESERVATION CONFLICT (and changes nothing) when this node is
    not registered or the victim is not, so only then are the keys read to say why -- a
    node that was itself fenced refuses, a victim already gone is fine unless a key that
    `known` (every node's key in this configuration) does not hold is registered.
    """
    keys: list[Key] | None = None
    try:
        preempt(storage, my_key, victim, pr_type, deadline, abort=True)
    except ReservationConflict:
        keys = keys_of(storage, deadline).keys
        if victim not in keys:
            stranger = _strangers(storage, keys, known | {my_key}, victim)
            if stranger is not None:
                return stranger
            if my_key not in keys:
                # Already off here, as a status check first would have said.
                return DeviceReport(storage, True, f"key {victim} not registered",
                                    keys=keys)
        elif my_key not in keys:
            raise _not_registered(storage, my_key) from None
        else:
            raise
    if keys is None:
        keys = keys_of(storage, deadline).keys
    if victim in keys:
        return DeviceReport(storage, False, f"key {victim} still registered after "
                            "PREEMPT AND ABORT", keys=keys)
    if not reservation_of(storage, deadline).held:
        reserve(storage, my_key, pr_type, deadline)
    return DeviceReport(storage, True, f"key {victim} removed", keys=keys)


def check(storage: Storage, key: Key, deadline: Deadline) -> DeviceReport:
    """Monitor: is our key on this device, once per usable path (SCSI)?"""
    keys = keys_of(storage, deadline).keys
    have = keys.count(key)
    want = expected_count(storage, len(storage.paths))
    # A path dm failed while its disk runs is multipathd's business (unit attentions from
    # PR changes do that); a disk that is not running cannot carry our registration.
    degraded = [f"{p.node}: {p.why_not}" for p in storage.paths if not p.disk_running]
    if have < want:
        degraded.append(f"key {key} registered on {have} of {want} path(s); "
                        "run `on` to register the missing paths")
    if have == 0:
        return DeviceReport(storage, False, f"key {key} not registered", degraded,
                            keys)
    # Registered: a path down or unregistered makes the device degraded, not failed.
    return DeviceReport(storage, True, "healthy" if not degraded else "degraded",
                        degraded, keys)


def keys_on(storage: Storage, deadline: Deadline) -> DeviceReport:
    return DeviceReport(storage, True, "", keys=keys_of(storage, deadline).keys)


def keys_everywhere(storages: list[Storage], deadline: Deadline) -> list[DeviceReport]:
    """Every device's registrations, read at once (status, list, validate-all, the watchdog
    check)."""
    return run_everywhere(storages, lambda s: keys_on(s, deadline), deadline)


Op = Callable[[Storage], DeviceReport]


def _guarded(op: Op, storage: Storage) -> DeviceReport:
    try:
        return op(storage)
    except NotRegistered:
        raise
    except NotSupported as e:
        return DeviceReport(storage, False, f"persistent reservations are not supported by "
                            f"{storage}: {e}. Check that the storage enables them (for nvmet: "
                            "resv_enable on the namespace, Linux 6.13+)")
    except PrError as e:
        return DeviceReport(storage, False, str(e))


def run_with_arbiter(storages: list[Storage], op: Op,
                     deadline: Deadline) -> list[DeviceReport]:
    """`off`: the first device alone (the arbiter), then the others in parallel, within the
    deadline.

    If the arbiter fails, the others are not touched: in a fence race the loser stops there,
    so two nodes fencing each other cannot each win a subset of the devices.  Every node
    orders the devices the same way (devices.resolve_all: by WWID).
    """
    if not storages:
        return []
    first = _in_parallel([storages[0]], op, deadline)
    if not first[0].ok:
        return first
    return first + _in_parallel(storages[1:], op, deadline)


def run_everywhere(storages: list[Storage], op: Op, deadline: Deadline) -> list[DeviceReport]:
    """Every action but `off`: every device at once, within the deadline, each outcome
    reported in the devices' order -- all problems in one run, and `on` registers what it
    can even where one device fails."""
    return _in_parallel(storages, op, deadline)


def _in_parallel(storages: list[Storage], op: Op, deadline: Deadline) -> list[DeviceReport]:
    """One thread per device, waited for until the deadline; a device still working then
    is reported as not answering.  A thread stuck in the kernel keeps the process alive:
    the hard bound is the child process of bounded.py, not these threads."""
    results: dict[int, DeviceReport | BaseException] = {}

    def work(i: int, s: Storage) -> None:
        try:
            results[i] = _guarded(op, s)
        except BaseException as e:  # surfaces NotRegistered to the caller
            results[i] = e

    threads = [threading.Thread(target=work, args=(i, s), daemon=True)
               for i, s in enumerate(storages)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(deadline.remaining())
    out = []
    for i, s in enumerate(storages):
        r = results.get(i)
        if r is None:
            out.append(DeviceReport(s, False, f"no answer within the {deadline.seconds:g}s "
                                    "timeout (power_timeout)"))
        elif isinstance(r, BaseException):
            raise r
        else:
            out.append(r)
    return out
