"""The one error table: every documented code lands on the documented exception type."""

from __future__ import annotations

import errno

import pytest
import tenacity

from fence_pr.pr import errors
from fence_pr.pr.errors import (
    TRANSIENT,
    DeviceBusy,
    DeviceGone,
    IoError,
    NotSupported,
    PathFailure,
    PermissionDenied,
    PrError,
    ReservationConflict,
    TransientError,
    exception_for,
    raise_for,
)

CASES = [
    (0x18, ReservationConflict),
    (0x2, IoError),
    (0x10000, PathFailure),
    (0xE0000, PathFailure),
    (0xF0000, PathFailure),
    (-errno.ENOTCONN, PathFailure),
    (-errno.EAGAIN, DeviceBusy),
    (-errno.EWOULDBLOCK, DeviceBusy),
    (-errno.ENODEV, DeviceGone),
    (-errno.ENXIO, DeviceGone),
    (-errno.EIO, IoError),
    (-errno.EOPNOTSUPP, NotSupported),
    (-errno.ENOTTY, NotSupported),
    (-errno.EINVAL, NotSupported),
    (-errno.EPERM, PermissionDenied),
    (-errno.EACCES, PermissionDenied),
]


@pytest.mark.parametrize(("code", "cls"), CASES)
def test_table(code: int, cls: type[PrError]) -> None:
    with pytest.raises(PrError) as info:
        raise_for(code, op="register", device="/dev/sdx")
    assert type(info.value) is cls
    assert info.value.code == code
    assert info.value.op == "register"
    assert info.value.device == "/dev/sdx"
    assert "register" in str(info.value)
    assert "/dev/sdx" in str(info.value)


def test_status_constants_match_pr_h() -> None:
    assert errors.PR_STS_IOERR == 0x2
    assert errors.PR_STS_RESERVATION_CONFLICT == 0x18
    assert errors.PR_STS_PATH_FAILED == 0x10000
    assert errors.PR_STS_RETRY_PATH_FAILURE == 0xE0000
    assert errors.PR_STS_PATH_FAST_FAILED == 0xF0000


def test_zero_is_success() -> None:
    raise_for(0, op="clear", device="/dev/sdx")
    with pytest.raises(ValueError):
        exception_for(0, op="clear", device="/dev/sdx")


@pytest.mark.parametrize("cls", [PathFailure, DeviceBusy, DeviceGone])
def test_transient_types(cls: type[PrError]) -> None:
    assert issubclass(cls, TransientError)
    assert issubclass(cls, TRANSIENT)


@pytest.mark.parametrize("cls", [ReservationConflict, IoError, NotSupported, PermissionDenied])
def test_non_transient_types(cls: type[PrError]) -> None:
    assert not issubclass(cls, TRANSIENT)
    assert not issubclass(cls, TransientError)


def test_unknown_positive_status_is_ioerror() -> None:
    exc = exception_for(0x1234, op="reserve", device="/dev/sdx")
    assert type(exc) is IoError
    assert "0x1234" in str(exc)


def test_unknown_errno_is_base_with_strerror() -> None:
    exc = exception_for(-errno.ENOSPC, op="reserve", device="/dev/sdx")
    assert type(exc) is PrError
    assert "ENOSPC" in str(exc)
    assert "No space left on device" in str(exc)


def test_permission_message_explains_rules() -> None:
    msg = str(exception_for(-errno.EPERM, op="reserve", device="/dev/sdb1"))
    assert "partition" in msg
    assert "CAP_SYS_ADMIN" in msg
    assert "opened for write" in msg


def test_missing_device_named_in_message() -> None:
    assert "<unknown device>" in str(exception_for(-errno.EIO, op="clear", device=None))


def test_reason_and_detail() -> None:
    exc = exception_for(-errno.EPERM, op="read keys", device="/dev/sdx",
                        reason="needs CAP_SYS_RAWIO", detail="SG_IO")
    assert type(exc) is PermissionDenied
    assert "needs CAP_SYS_RAWIO" in str(exc)
    assert "partition" not in str(exc)
    assert str(exc).endswith("[SG_IO]")


def test_tenacity_retries_only_transient() -> None:
    calls: list[int] = []

    def flaky(code: int) -> str:
        calls.append(code)
        if len(calls) < 3:
            raise_for(code, op="reserve", device="/dev/sdx")
        return "ok"

    policy = tenacity.retry(
        retry=tenacity.retry_if_exception_type(TRANSIENT),
        stop=tenacity.stop_after_attempt(5),
        wait=tenacity.wait_none(),
        reraise=True,
    )
    assert policy(flaky)(errors.PR_STS_PATH_FAILED) == "ok"
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(ReservationConflict):
        policy(flaky)(errors.PR_STS_RESERVATION_CONFLICT)
    assert len(calls) == 1


def test_every_error_fence_pr_raises_has_the_one_base() -> None:
    """One base (FencePrError), so each front end catches one type in one place; anything
    else reaching it is a bug.  Found by walking the package, not by listing."""
    import importlib
    import inspect
    import pkgutil

    import fence_pr
    from fence_pr.pr.errors import FencePrError

    found = []
    for mod in pkgutil.walk_packages(fence_pr.__path__, "fence_pr."):
        module = importlib.import_module(mod.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == mod.name:
                found.append(cls)
                assert issubclass(cls, FencePrError), f"{mod.name}.{cls.__name__}"
    assert len(found) >= 15, found


def test_the_agent_turns_every_fence_pr_error_into_one_line_and_exit_1(
        caplog: pytest.LogCaptureFixture) -> None:
    from fence_pr.devices import DeviceRefused
    from fence_pr.fencing_agent import _exit_code_of
    from fence_pr.host.corosync import CmapError
    from fence_pr.host.lock import LockTimeout
    from fence_pr.plan import Refused
    from fence_pr.pr.errors import ActionFailed, NotRegistered, exception_for

    errors: list[Exception] = [
        Refused("bad option"), DeviceRefused("not a disk"), CmapError("no corosync"),
        LockTimeout("held"), ActionFailed("off failed on /dev/sdx"), NotRegistered("gone"),
        exception_for(-errno.EIO, op="read keys", device="/dev/sdx")]
    for e in errors:
        def boom(e: Exception = e) -> int:
            raise e
        caplog.clear()
        assert _exit_code_of(boom) == 1
        assert [r.getMessage() for r in caplog.records] == [f"Failed: {e}"], type(e)


def test_the_read_keys_race_goes_through_the_table() -> None:
    """prh once built this DeviceBusy by hand; the table says EAGAIN is transient."""
    from fence_pr.pr.errors import DeviceBusy, exception_for

    e = exception_for(-errno.EAGAIN, op="read keys", device="/dev/sdx", reason="kept changing")
    assert type(e) is DeviceBusy and "kept changing" in str(e)
