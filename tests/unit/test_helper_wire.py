"""The pr-manager-helper wire format and the SCSI bytes it carries (QEMU's
docs/interop/pr-helper.rst; SPC-4 for the PERSISTENT RESERVE IN/OUT data)."""

from __future__ import annotations

import struct

import pytest

from fence_pr.helper import wire
from fence_pr.helper.wire import InAction, OutAction, OutCommand, Reply, Status, Violation
from fence_pr.pr.prtypes import Key, PrType


def cdb_out(action: int, type_code: int = 5, scope: int = 0, length: int = 24) -> bytes:
    return bytes([0x5F, action, scope << 4 | type_code, 0, 0]) + length.to_bytes(4, "big") \
        + bytes(7)


def cdb_in(action: int, allocation: int = 8192) -> bytes:
    return bytes([0x5E, action, 0, 0, 0, 0, 0]) + allocation.to_bytes(2, "big") + bytes(7)


def params(key: int = 0, sa_key: int = 0, flags: int = 0, extra: bytes = b"") -> bytes:
    return struct.pack(">QQIBBH", key, sa_key, 0, flags, 0, 0) + extra


def test_reply_layout_is_status_size_96_bytes_of_sense_then_payload() -> None:
    raw = Reply(Status.GOOD, payload=b"abc").encode()
    assert raw[:8] == struct.pack(">ii", 0, 3) and raw[8:104] == bytes(96) and raw[104:] == b"abc"
    raw = wire.check_condition(wire.INVALID_FIELD).encode()
    assert struct.unpack(">ii", raw[:8]) == (2, 0) and len(raw) == 104
    sense = raw[8:]
    assert (sense[0], sense[2], sense[7], sense[12], sense[13]) == (0x70, 0x05, 10, 0x24, 0)
    conflict = Reply(Status.RESERVATION_CONFLICT).encode()
    assert struct.unpack(">ii", conflict[:8]) == (0x18, 0) and conflict[8:] == bytes(96)
    with pytest.raises(ValueError):
        Reply(Status.CHECK_CONDITION, wire.INVALID_FIELD, b"x").encode()


def test_transfer_length_reads_in_bytes_7_8_and_out_bytes_5_8() -> None:
    assert wire.transfer_length(cdb_in(0, 0x1234)) == 0x1234
    assert wire.transfer_length(cdb_out(0, length=24)) == 24
    assert wire.transfer_length(cdb_out(0, length=8192)) == 8192
    for bad in (cdb_out(0, length=8193), cdb_in(0, 8193), bytes([0x12]) + bytes(15),
                cdb_in(0)[:15]):
        with pytest.raises(Violation):
            wire.transfer_length(bad)


@pytest.mark.parametrize("action", [OutAction.REGISTER, OutAction.REGISTER_AND_IGNORE,
                                    OutAction.CLEAR])
def test_register_and_clear_carry_both_keys_and_need_no_type(action: OutAction) -> None:
    c = wire.parse_out(cdb_out(action, type_code=0), params(0x11, 0x22, flags=wire.APTPL))
    assert c == OutCommand(action, None, Key(0x11), Key(0x22), True)


@pytest.mark.parametrize(("scsi_type", "pr_type"), [(1, PrType.WRITE_EXCLUSIVE),
                                                    (3, PrType.EXCLUSIVE_ACCESS),
                                                    (5, PrType.WRITE_EXCLUSIVE_REG_ONLY),
                                                    (6, PrType.EXCLUSIVE_ACCESS_REG_ONLY),
                                                    (7, PrType.WRITE_EXCLUSIVE_ALL_REGS),
                                                    (8, PrType.EXCLUSIVE_ACCESS_ALL_REGS)])
def test_typed_actions_convert_the_spc_type(scsi_type: int, pr_type: PrType) -> None:
    for action in (OutAction.RESERVE, OutAction.RELEASE, OutAction.PREEMPT,
                   OutAction.PREEMPT_AND_ABORT):
        c = wire.parse_out(cdb_out(action, scsi_type), params(1, 2))
        assert isinstance(c, OutCommand) and c.pr_type is pr_type


@pytest.mark.parametrize(("cdb", "plist", "sense"), [
    (cdb_out(OutAction.REGISTER_AND_MOVE), params(1, 2), wire.INVALID_FIELD),
    (cdb_out(OutAction.REPLACE_LOST_RESERVATION), params(1, 2), wire.INVALID_FIELD),
    (cdb_out(0x1F), params(1, 2), wire.INVALID_FIELD),
    (cdb_out(OutAction.RESERVE, scope=1), params(1), wire.INVALID_FIELD),
    (cdb_out(OutAction.RESERVE, type_code=2), params(1), wire.INVALID_FIELD),
    (cdb_out(OutAction.PREEMPT, type_code=0), params(1, 2), wire.INVALID_FIELD),
    (cdb_out(OutAction.REGISTER, length=23), params(1)[:23], wire.INVALID_PARAM_LEN),
    (cdb_out(OutAction.REGISTER), params(0, 1, flags=wire.SPEC_I_PT), wire.INVALID_PARAM),
    (cdb_out(OutAction.REGISTER), params(0, 1, flags=wire.ALL_TG_PT), wire.INVALID_PARAM),
    (cdb_out(OutAction.REGISTER, length=28), params(0, 1, extra=bytes(4)), wire.INVALID_PARAM),
])
def test_what_pr_h_cannot_do_is_refused_with_illegal_request(
        cdb: bytes, plist: bytes, sense: wire.Sense) -> None:
    assert wire.parse_out(cdb, plist) == wire.check_condition(sense)


def test_pr_in_actions_and_read_full_status_refused() -> None:
    assert wire.parse_in(cdb_in(0)) is InAction.READ_KEYS
    assert wire.parse_in(cdb_in(1)) is InAction.READ_RESERVATION
    assert wire.parse_in(cdb_in(2)) is InAction.REPORT_CAPABILITIES
    assert wire.parse_in(cdb_in(3)) == wire.check_condition(wire.INVALID_FIELD)
    assert wire.parse_in(cdb_in(9)) == wire.check_condition(wire.INVALID_FIELD)


def test_read_keys_data_and_clipping_keeps_the_full_length_in_the_header() -> None:
    data = wire.read_keys_data(7, [Key(1), Key(0xABC)])
    assert data == struct.pack(">IIQQ", 7, 16, 1, 0xABC)
    clipped = wire.clip(data, 12)
    assert clipped == data[:12] and struct.unpack(">II", clipped[:8]) == (7, 16)


def test_read_reservation_data() -> None:
    assert wire.read_reservation_data(3, Key(0), None) == struct.pack(">II", 3, 0)
    held = wire.read_reservation_data(4, Key(0x99), PrType.WRITE_EXCLUSIVE_REG_ONLY)
    assert len(held) == 24
    assert struct.unpack(">IIQ", held[:16]) == (4, 16, 0x99) and held[21] == 0x05


def test_report_capabilities_says_what_pr_h_gives() -> None:
    data = wire.report_capabilities_data()
    length, caps, flags, mask = struct.unpack(">HBBH", data[:6])
    assert length == 8 == len(data)
    assert caps == 0x01  # PTPL_C only: no SIP_C, no ATP_C (pr.h sends neither)
    assert flags == 0x81  # TMV, PTPL_A (sd sets APTPL on every REGISTER)
    assert mask == 0xEA01  # WR_EX, EX_AC, WR_EX_RO, EX_AC_RO, WR_EX_AR; EX_AC_AR
