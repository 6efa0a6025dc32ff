"""pr.h binding: layouts, ioctl numbers, argument packing, result handling (fake kernel)."""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Callable

import pytest

from fence_pr.pr import _ioctl, prh
from fence_pr.pr.errors import DeviceBusy, IoError, NotSupported, PathFailure, ReservationConflict
from fence_pr.pr.prtypes import PrType

FACTS = {  # /work/shared/pr-facts.md
    "IOC_PR_REGISTER": 0x401870C8,
    "IOC_PR_RESERVE": 0x401070C9,
    "IOC_PR_RELEASE": 0x401070CA,
    "IOC_PR_PREEMPT": 0x401870CB,
    "IOC_PR_PREEMPT_ABORT": 0x401870CC,
    "IOC_PR_CLEAR": 0x401070CD,
    "IOC_PR_READ_KEYS": 0xC01070CE,
    "IOC_PR_READ_RESERVATION": 0x801070CF,
}


@pytest.mark.parametrize(("name", "number"), FACTS.items())
def test_ioctl_numbers(name: str, number: int) -> None:
    assert getattr(prh, name) == number


@pytest.mark.parametrize(("struct_", "size", "offsets"), [
    (prh.pr_registration, 24, {"old_key": 0, "new_key": 8, "flags": 16, "pad": 20}),
    (prh.pr_reservation, 16, {"key": 0, "type": 8, "flags": 12}),
    (prh.pr_preempt, 24, {"old_key": 0, "new_key": 8, "type": 16, "flags": 20}),
    (prh.pr_clear, 16, {"key": 0, "flags": 8, "pad": 12}),
    (prh.pr_read_keys, 16, {"generation": 0, "num_keys": 4, "keys_ptr": 8}),
    (prh.pr_read_reservation, 16, {"key": 0, "generation": 8, "type": 12}),
])
def test_struct_layout(struct_: type[ctypes.Structure], size: int, offsets: dict[str, int]) -> None:
    assert ctypes.sizeof(struct_) == size
    for field, offset in offsets.items():
        assert getattr(struct_, field).offset == offset


def test_ioc_helpers() -> None:
    assert _ioctl.io("N", 0x40) == 0x4E40
    assert _ioctl.iowr("N", 0x43, 72) == 0xC0484E43
    assert _ioctl.ior("p", 207, 16) == 0x801070CF
    with pytest.raises(ValueError):
        _ioctl.iow("p", 1, 1 << 14)


def test_flag_value() -> None:
    assert prh.PR_FL_IGNORE_KEY == 1


def test_call_returns_negative_errno_for_bad_fd() -> None:
    fd = os.open("/dev/null", os.O_RDONLY)
    os.close(fd)
    assert _ioctl.call(fd, prh.IOC_PR_READ_RESERVATION, bytearray(16)) == -errno.EBADF


def test_real_kernel_rejects_pr_ioctl_on_char_device() -> None:
    # /dev/null has no pr_ops: the kernel answers ENOTTY, which must read as NotSupported.
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        with pytest.raises(NotSupported, match="/dev/null"):
            prh.read_reservation(fd, device="/dev/null")
        with pytest.raises(NotSupported):
            prh.read_keys(fd, device="/dev/null")
    finally:
        os.close(fd)


class Recorder:
    """Fake kernel: records (request, argument bytes) and answers with queued return codes."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes]] = []
        self.answers: list[int] = []

    def __call__(self, fd: int, request: int, buf: bytearray | None = None) -> int:
        self.sent.append((request, bytes(buf or b"")))
        return self.answers.pop(0) if self.answers else 0


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr(_ioctl, "call", rec)
    return rec


def test_register_packs_arguments(kernel: Recorder) -> None:
    prh.register(3, 0x1111, 0x2222, ignore_key=True, device="/dev/sdx")
    request, arg = kernel.sent[0]
    assert request == 0x401870C8
    assert struct.unpack("=QQII", arg) == (0x1111, 0x2222, 1, 0)


def test_reserve_release_clear_pack(kernel: Recorder) -> None:
    prh.reserve(3, 0xABC, PrType.WRITE_EXCLUSIVE_REG_ONLY)
    prh.release(3, 0xABC, PrType.EXCLUSIVE_ACCESS)
    prh.clear(3, 0xABC)
    assert kernel.sent[0] == (0x401070C9, struct.pack("=QII", 0xABC, 3, 0))
    assert kernel.sent[1] == (0x401070CA, struct.pack("=QII", 0xABC, 2, 0))
    assert kernel.sent[2] == (0x401070CD, struct.pack("=QII", 0xABC, 0, 0))


def test_preempt_abort_selects_ioctl_and_key_order(kernel: Recorder) -> None:
    prh.preempt(3, 0xAAA, 0xBBB, PrType.WRITE_EXCLUSIVE_REG_ONLY, abort=True)
    prh.preempt(3, 0xAAA, 0xBBB, PrType.WRITE_EXCLUSIVE_REG_ONLY)
    assert kernel.sent[0] == (0x401870CC, struct.pack("=QQII", 0xAAA, 0xBBB, 3, 0))
    assert kernel.sent[1][0] == 0x401870CB


def test_positive_status_raises(kernel: Recorder) -> None:
    kernel.answers.extend([0x18, 0x10000, -errno.ENOTTY])
    with pytest.raises(ReservationConflict, match=r"reserve failed on /dev/sdq"):
        prh.reserve(3, 1, PrType.WRITE_EXCLUSIVE, device="/dev/sdq")
    with pytest.raises(PathFailure):
        prh.register(3, 0, 1, device="/dev/sdq")
    with pytest.raises(NotSupported):
        prh.clear(3, 1, device="/dev/sdq")


@pytest.mark.parametrize("key", [-1, 1 << 64])
def test_key_range_checked(key: int) -> None:
    with pytest.raises(ValueError):
        prh.register(3, 0, key)


class FakeKeys:
    """A kernel answering IOC_PR_READ_KEYS from a changing list of keys."""

    def __init__(self, key_lists: list[list[int]], generation: int = 7) -> None:
        self.key_lists = key_lists
        self.generation = generation
        self.requests: list[int] = []

    def __call__(self, fd: int, request: int, buf: bytearray | None = None) -> int:
        assert request == prh.IOC_PR_READ_KEYS and buf is not None
        keys = self.key_lists[min(len(self.requests), len(self.key_lists) - 1)]
        arg = prh.pr_read_keys.from_buffer(buf)
        self.requests.append(int(arg.num_keys))
        n = min(int(arg.num_keys), len(keys))
        if n:
            ctypes.memmove(arg.keys_ptr, (ctypes.c_uint64 * n)(*keys[:n]), 8 * n)
        arg.generation = self.generation
        arg.num_keys = len(keys)
        return 0


def test_read_keys_one_call_when_they_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeKeys([[0xA, 0xB, 0xA]])
    monkeypatch.setattr(_ioctl, "call", fake)
    result = prh.read_keys(3)
    assert result.keys == [0xA, 0xB, 0xA]
    assert result.generation == 7
    assert fake.requests == [prh.FIRST_READ_KEYS]


def test_read_keys_sizes_then_reads_when_more(monkeypatch: pytest.MonkeyPatch) -> None:
    many = list(range(1, prh.FIRST_READ_KEYS + 6))
    fake = FakeKeys([many])
    monkeypatch.setattr(_ioctl, "call", fake)
    assert prh.read_keys(3).keys == many
    assert fake.requests == [prh.FIRST_READ_KEYS, len(many)]


def test_read_keys_empty_needs_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeKeys([[]])
    monkeypatch.setattr(_ioctl, "call", fake)
    assert prh.read_keys(3).keys == []
    assert fake.requests == [prh.FIRST_READ_KEYS]


def test_read_keys_retries_when_count_grows(monkeypatch: pytest.MonkeyPatch) -> None:
    n = prh.FIRST_READ_KEYS
    fake = FakeKeys([list(range(1, n + 2)), list(range(1, n + 3)), list(range(1, n + 3))])
    monkeypatch.setattr(_ioctl, "call", fake)
    assert prh.read_keys(3).keys == list(range(1, n + 3))
    assert fake.requests == [n, n + 1, n + 2]


def test_read_keys_gives_up_when_count_keeps_growing(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeKeys([list(range(1, prh.FIRST_READ_KEYS + n + 2)) for n in range(10)])
    monkeypatch.setattr(_ioctl, "call", fake)
    with pytest.raises(DeviceBusy, match="kept changing"):
        prh.read_keys(3, device="/dev/sdx")


def test_read_keys_refuses_more_than_kernel_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(fd: int, request: int, buf: bytearray | None = None) -> int:
        assert buf is not None
        prh.pr_read_keys.from_buffer(buf).num_keys = prh.MAX_KEYS + 1
        return 0

    monkeypatch.setattr(_ioctl, "call", fake)
    with pytest.raises(IoError, match="65537"):
        prh.read_keys(3)


def _fake_reservation(key: int, generation: int, type_: int) -> Callable[..., int]:
    def fake(fd: int, request: int, buf: bytearray | None = None) -> int:
        assert request == prh.IOC_PR_READ_RESERVATION and buf is not None
        buf[:] = struct.pack("=QII", key, generation, type_)
        return 0
    return fake


def test_read_reservation_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_ioctl, "call", _fake_reservation(0, 4, 0))
    res = prh.read_reservation(3)
    assert res.type is None and res.key == 0 and res.generation == 4


def test_read_reservation_held(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_ioctl, "call", _fake_reservation(0xFEED, 9, 3))
    res = prh.read_reservation(3)
    assert res.type is PrType.WRITE_EXCLUSIVE_REG_ONLY and res.key == 0xFEED


def test_read_reservation_unknown_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_ioctl, "call", _fake_reservation(1, 1, 9))
    with pytest.raises(IoError, match="unknown reservation type 9"):
        prh.read_reservation(3)
