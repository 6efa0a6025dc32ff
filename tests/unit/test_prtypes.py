from __future__ import annotations

import pytest

from fence_pr.pr.errors import FencePrError
from fence_pr.pr.prtypes import NO_KEY, Key, KeyRangeError, PrType, Reservation

SCSI = {1: 1, 3: 2, 5: 3, 6: 4, 7: 5, 8: 6}  # SPC code -> pr.h code


def test_pr_h_numbering() -> None:
    assert [t.value for t in PrType] == [1, 2, 3, 4, 5, 6]
    assert int(PrType.WRITE_EXCLUSIVE_REG_ONLY) == 3


@pytest.mark.parametrize(("scsi", "prh"), SCSI.items())
def test_scsi_conversion(scsi: int, prh: int) -> None:
    assert PrType.from_scsi(scsi) == prh
    assert PrType(prh).to_scsi() == scsi


def test_fence_scsi_type_5_is_write_exclusive_registrants_only() -> None:
    assert PrType.from_scsi(5) is PrType.WRITE_EXCLUSIVE_REG_ONLY


@pytest.mark.parametrize("bad", [0, 2, 4, 9, 15])
def test_unknown_scsi_type(bad: int) -> None:
    with pytest.raises(ValueError, match="SCSI"):
        PrType.from_scsi(bad)


def test_nvme_numbering_equals_pr_h() -> None:
    assert PrType.from_nvme(3) is PrType.WRITE_EXCLUSIVE_REG_ONLY
    with pytest.raises(ValueError):
        PrType.from_nvme(7)


def test_all_registrants() -> None:
    assert {t for t in PrType if t.all_registrants} == {
        PrType.WRITE_EXCLUSIVE_ALL_REGS, PrType.EXCLUSIVE_ACCESS_ALL_REGS}


def test_reservation_held() -> None:
    assert not Reservation(NO_KEY, 1, None).held
    assert Reservation(Key(5), 1, PrType.WRITE_EXCLUSIVE).held


def test_key_is_checked_where_it_is_made_and_prints_as_hex() -> None:
    assert str(Key(0x6C9D0001)) == "0x6c9d0001" == f"{Key(0x6C9D0001)}"
    assert repr(Key(1)) == "Key(0x1)" and Key(1) == 1 and str(NO_KEY) == "0x0"
    for bad in (-1, 1 << 64, True, 1.0):
        with pytest.raises(KeyRangeError):
            Key(bad)  # type: ignore[arg-type]
    assert issubclass(KeyRangeError, ValueError) and issubclass(KeyRangeError, FencePrError)
