from __future__ import annotations

import pytest

from fence_pr.pr.prtypes import PrType, Reservation

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
    assert not Reservation(0, 1, None).held
    assert Reservation(5, 1, PrType.WRITE_EXCLUSIVE).held
