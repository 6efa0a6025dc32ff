"""QEMU's pr-manager-helper protocol and the SCSI bytes it carries (pure: no I/O).

The reference is QEMU's docs/interop/pr-helper.rst and scsi/pr-manager-helper.c: big-endian;
the helper sends 4 bytes of supported features, QEMU answers 4 bytes of requested features
(both 0); a request is a 16-byte CDB with one descriptor in SCM_RIGHTS, then, for PERSISTENT
RESERVE OUT, the parameter list; the reply is int32 status, int32 payload size, 96 bytes of
sense, then the payload (PERSISTENT RESERVE IN only, never past the allocation length).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from ..pr.errors import FencePrError
from ..pr.prtypes import Key, PrType

CDB_SIZE = 16
SENSE_SIZE = 96
DATA_MAX = 8192  # QEMU's PR_HELPER_DATA_SIZE: the largest parameter list or allocation length
FEATURES = struct.Struct(">I")
REPLY_HEAD = struct.Struct(">ii")
PR_OUT_FIXED = 24  # reservation key, service action key, obsolete, flags, reserved

PERSISTENT_RESERVE_IN = 0x5E
PERSISTENT_RESERVE_OUT = 0x5F


class Status(IntEnum):
    """SCSI status bytes the helper answers with."""

    GOOD = 0x00
    CHECK_CONDITION = 0x02
    RESERVATION_CONFLICT = 0x18


class InAction(IntEnum):
    READ_KEYS = 0
    READ_RESERVATION = 1
    REPORT_CAPABILITIES = 2
    READ_FULL_STATUS = 3


class OutAction(IntEnum):
    REGISTER = 0
    RESERVE = 1
    RELEASE = 2
    CLEAR = 3
    PREEMPT = 4
    PREEMPT_AND_ABORT = 5
    REGISTER_AND_IGNORE = 6
    REGISTER_AND_MOVE = 7
    REPLACE_LOST_RESERVATION = 8


# Parameter-list flag bits (SPC-4 6.16.3, byte 20).
SPEC_I_PT = 0x08
ALL_TG_PT = 0x04
APTPL = 0x01


@dataclass(frozen=True)
class Sense:
    """Sense key, additional sense code and qualifier: one SCSI outcome a guest acts on."""

    key: int
    asc: int
    ascq: int

    def encode(self) -> bytes:
        """Fixed-format sense data (response code 0x70), padded to the protocol's 96 bytes."""
        body = bytearray(18)
        body[0] = 0x70
        body[2] = self.key
        body[7] = 10  # additional sense length
        body[12] = self.asc
        body[13] = self.ascq
        return bytes(body).ljust(SENSE_SIZE, b"\0")


# The sense codes the helper answers with (QEMU's scsi/utils.c names).
INVALID_OPCODE = Sense(0x05, 0x20, 0x00)  # ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE
INVALID_FIELD = Sense(0x05, 0x24, 0x00)  # ILLEGAL REQUEST, INVALID FIELD IN CDB
INVALID_PARAM = Sense(0x05, 0x26, 0x00)  # ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST
INVALID_PARAM_LEN = Sense(0x05, 0x1A, 0x00)  # ILLEGAL REQUEST, PARAMETER LIST LENGTH ERROR
LUN_COMM_FAILURE = Sense(0x0B, 0x08, 0x00)  # ABORTED COMMAND, LOGICAL UNIT COMMUNICATION FAILURE
NOT_READY = Sense(0x02, 0x04, 0x00)  # NOT READY, LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE
TARGET_FAILURE = Sense(0x04, 0x44, 0x00)  # HARDWARE ERROR, INTERNAL TARGET FAILURE


class Violation(FencePrError):
    """The client broke the protocol: the helper closes the connection, as QEMU's does
    (server.serve_client logs it and goes on serving the others)."""


@dataclass(frozen=True)
class Reply:
    status: Status
    sense: Sense | None = None
    payload: bytes = b""

    def encode(self) -> bytes:
        if self.payload and self.status is not Status.GOOD:
            raise ValueError("a payload goes only with GOOD")
        sense = self.sense.encode() if self.sense else bytes(SENSE_SIZE)
        return REPLY_HEAD.pack(self.status, len(self.payload)) + sense + self.payload


def check_condition(sense: Sense) -> Reply:
    return Reply(Status.CHECK_CONDITION, sense)


def transfer_length(cdb: bytes) -> int:
    """The allocation length (IN, bytes 7-8) or parameter list length (OUT, bytes 5-8).
    Raises Violation for another opcode or a length over DATA_MAX: QEMU closes then."""
    if len(cdb) != CDB_SIZE:
        raise Violation(f"CDB of {len(cdb)} bytes, not {CDB_SIZE}")
    if cdb[0] == PERSISTENT_RESERVE_IN:
        size = int.from_bytes(cdb[7:9], "big")
    elif cdb[0] == PERSISTENT_RESERVE_OUT:
        size = int.from_bytes(cdb[5:9], "big")
    else:
        raise Violation(f"opcode 0x{cdb[0]:02x} is neither PERSISTENT RESERVE IN (0x5e) nor "
                        "OUT (0x5f)")
    if size > DATA_MAX:
        raise Violation(f"transfer length {size} is over the protocol's {DATA_MAX}")
    return size


# ---- PERSISTENT RESERVE OUT ----------------------------------------------------------------

@dataclass(frozen=True)
class OutCommand:
    """A PERSISTENT RESERVE OUT the helper can carry out through pr.h."""

    action: OutAction
    pr_type: PrType | None  # from the CDB's TYPE, for the actions that use it
    key: Key  # RESERVATION KEY
    sa_key: Key  # SERVICE ACTION RESERVATION KEY
    aptpl: bool  # what the guest asked; Linux's sd sets APTPL on every REGISTER regardless


_TYPED = {OutAction.RESERVE, OutAction.RELEASE, OutAction.PREEMPT, OutAction.PREEMPT_AND_ABORT}


def parse_out(cdb: bytes, params: bytes) -> OutCommand | Reply:
    """The command, or the CHECK CONDITION that refuses it (the request was read whole, so
    the connection stays up).  Refused: REGISTER AND MOVE and REPLACE LOST RESERVATION
    (pr.h has neither), a scope other than LU_SCOPE, an unknown type, SPEC_I_PT / ALL_TG_PT
    (pr.h sends neither: transport IDs cannot be honoured), a short parameter list."""
    try:
        action = OutAction(cdb[1] & 0x1F)
    except ValueError:
        return check_condition(INVALID_FIELD)
    if action in (OutAction.REGISTER_AND_MOVE, OutAction.REPLACE_LOST_RESERVATION):
        return check_condition(INVALID_FIELD)
    if len(params) < PR_OUT_FIXED:
        return check_condition(INVALID_PARAM_LEN)
    scope, type_code = cdb[2] >> 4, cdb[2] & 0x0F
    pr_type: PrType | None = None
    if action in _TYPED:
        if scope != 0:
            return check_condition(INVALID_FIELD)
        try:
            pr_type = PrType.from_scsi(type_code)
        except ValueError:
            return check_condition(INVALID_FIELD)
    flags = params[20]
    if flags & (SPEC_I_PT | ALL_TG_PT) or len(params) > PR_OUT_FIXED:
        return check_condition(INVALID_PARAM)
    key = Key(int.from_bytes(params[0:8], "big"))
    sa_key = Key(int.from_bytes(params[8:16], "big"))
    return OutCommand(action, pr_type, key, sa_key, bool(flags & APTPL))


# ---- PERSISTENT RESERVE IN -----------------------------------------------------------------

def parse_in(cdb: bytes) -> InAction | Reply:
    """READ KEYS, READ RESERVATION or REPORT CAPABILITIES; READ FULL STATUS needs the
    transport IDs pr.h does not give, so it is refused as qemu-pr-helper refuses it."""
    try:
        action = InAction(cdb[1] & 0x1F)
    except ValueError:
        return check_condition(INVALID_FIELD)
    if action is InAction.READ_FULL_STATUS:
        return check_condition(INVALID_FIELD)
    return action


def read_keys_data(generation: int, keys: list[Key]) -> bytes:
    body = b"".join(struct.pack(">Q", k) for k in keys)
    return struct.pack(">II", generation & 0xFFFFFFFF, len(body)) + body


def read_reservation_data(generation: int, key: Key, pr_type: PrType | None) -> bytes:
    head = struct.pack(">I", generation & 0xFFFFFFFF)
    if pr_type is None:
        return head + struct.pack(">I", 0)
    # key, obsolete (4), reserved, scope (LU_SCOPE 0) | type, obsolete (2)
    return head + struct.pack(">IQIBBH", 16, key, 0, 0, pr_type.to_scsi(), 0)


def report_capabilities_data() -> bytes:
    """What pr.h can do, whatever the device: no SPEC_I_PT or ALL_TG_PT (ATP_C, SIP_C 0),
    PTPL_C 1 (sd asks for APTPL on every REGISTER, so it is always active: PTPL_A 1), and
    all six types (TMV 1, mask WR_EX, EX_AC, WR_EX_RO, EX_AC_RO, WR_EX_AR, EX_AC_AR)."""
    ptpl_c = 0x01
    tmv_ptpl_a = 0x80 | 0x01
    mask = 0x02 | 0x08 | 0x20 | 0x40 | 0x80, 0x01  # byte 4: 1,3,5,6,7; byte 5: 8
    return struct.pack(">HBBBBH", 8, ptpl_c, tmv_ptpl_a, mask[0], mask[1], 0)


def clip(payload: bytes, allocation_length: int) -> bytes:
    """Never past the allocation length: the header still says how much there was."""
    return payload[:allocation_length]
