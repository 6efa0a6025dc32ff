"""One request of QEMU's pr-manager-helper protocol carried out on the LU behind its
descriptor, through the same engine the agent uses.

`answer` is the helper's one place that turns an outcome into what a guest sees: SCSI
status and sense, with a log line for the admin where the cause is on the host.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Callable

from ..devices import DeviceRefused
from ..lu import LogicalUnit
from ..pr.errors import (
    DeviceBusy,
    FencePrError,
    NotSupported,
    PermissionDenied,
    ReservationConflict,
    TransientError,
)
from . import wire
from .wire import InAction, OutAction, OutCommand, Reply, Status, check_condition

log = logging.getLogger(__name__)

Opener = Callable[[int], LogicalUnit]


def answer(fd: int, cdb: bytes, params: bytes, *, open_lu: Opener) -> Reply:
    """The reply to one whole request (the CDB and, for OUT, its parameter list).

    A PR OUT on a descriptor opened read-only is refused as qemu-pr-helper refuses it
    (INVALID COMMAND OPERATION CODE): the descriptor is the client's proof of access."""
    try:
        if cdb[0] == wire.PERSISTENT_RESERVE_OUT:
            if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
                return check_condition(wire.INVALID_OPCODE)
            command = wire.parse_out(cdb, params)
            if isinstance(command, Reply):
                return command
            _carry_out(open_lu(fd), command)
            return Reply(Status.GOOD)
        action = wire.parse_in(cdb)
        if isinstance(action, Reply):
            return action
        allocation = wire.transfer_length(cdb)
        return Reply(Status.GOOD, payload=wire.clip(_read(open_lu(fd), action), allocation))
    except ReservationConflict:
        return Reply(Status.RESERVATION_CONFLICT)
    except DeviceBusy as e:
        log.warning("%s", e)
        return check_condition(wire.NOT_READY)
    except TransientError as e:
        # Every path and retry failed: the guest's sd retries ABORTED COMMAND, its
        # multipath (if any) fails the path over.
        log.warning("%s", e)
        return check_condition(wire.LUN_COMM_FAILURE)
    except (DeviceRefused, NotSupported) as e:
        log.info("%s", e)
        return check_condition(wire.INVALID_OPCODE)
    except PermissionDenied as e:
        log.error("%s: give the helper's group write access to the map's path devices "
                  "(packaging/udev/60-fence_pr.rules)", e)
        return check_condition(wire.INVALID_OPCODE)
    except (FencePrError, OSError) as e:
        log.error("%s", e)
        return check_condition(wire.TARGET_FAILURE)


def _carry_out(lu: LogicalUnit, c: OutCommand) -> None:
    if c.action is OutAction.REGISTER or c.action is OutAction.REGISTER_AND_IGNORE:
        ignore = c.action is OutAction.REGISTER_AND_IGNORE
        done = lu.register(c.sa_key, old_key=c.key, ignore_existing=ignore)
        for line in done.left_out:
            log.warning("%s: REGISTER left out %s", lu, line)
        return
    if c.action is OutAction.CLEAR:
        lu.clear(c.key)
        return
    assert c.pr_type is not None  # wire.parse_out gives every other action its type
    if c.action is OutAction.RESERVE:
        lu.reserve(c.key, c.pr_type)
    elif c.action is OutAction.RELEASE:
        lu.release(c.key, c.pr_type)
    else:
        lu.preempt(c.key, c.sa_key, c.pr_type, abort=c.action is OutAction.PREEMPT_AND_ABORT)


def _read(lu: LogicalUnit, action: InAction) -> bytes:
    if action is InAction.READ_KEYS:
        keys = lu.read_keys()
        return wire.read_keys_data(keys.generation, keys.keys)
    if action is InAction.READ_RESERVATION:
        r = lu.read_reservation()
        return wire.read_reservation_data(r.generation, r.key, r.type)
    return wire.report_capabilities_data()
