"""The SGX measurement (MRENCLAVE), against the SDM's update sequence written out with hashlib."""

from __future__ import annotations

import hashlib
import struct

import pytest

from fedattest.errors import FormatError
from fedattest.sgx.mrenclave import Measurement


def reference_mrenclave(ssa: int, size: int, pages: list[tuple[int, int, bytes | None]]) -> bytes:
    """The SDM's update sequence written out directly with hashlib."""
    h = hashlib.sha256()
    h.update(b"ECREATE\x00" + struct.pack("<IQ", ssa, size) + bytes(44))
    for offset, flags, data in pages:
        h.update(b"EADD\x00\x00\x00\x00" + struct.pack("<QQ", offset, flags) + bytes(40))
        if data is not None:
            for i in range(0, 4096, 256):
                h.update(b"EEXTEND\x00" + struct.pack("<Q", offset + i) + bytes(48) + data[i : i + 256])
    return h.digest()


PAGES = [(0, 0x205, bytes(range(256)) * 16), (4096, 0x100, b"\x01" * 4096), (8192, 0x203, None), (12288, 0x203, bytes(4096))]


def test_measurement_follows_the_sdm() -> None:
    m = Measurement(ssa_frame_size=1, enclave_size=1 << 16)
    for offset, flags, data in PAGES:
        m.add_page(offset, flags, data)
    assert m.digest() == reference_mrenclave(1, 1 << 16, PAGES)


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda m: m.add_page(1 << 16, 0x200, None), "outside the enclave"),
        (lambda m: m.add_page(100, 0x200, None), "misaligned"),
        (lambda m: m.add_page(0, 0x200, b"short"), "4096 bytes"),
        (lambda m: m.eextend(128, bytes(256)), "256-byte aligned"),
    ],
)
def test_bad_measurement_steps(call: object, needle: str) -> None:
    m = Measurement(ssa_frame_size=1, enclave_size=1 << 16)
    with pytest.raises(FormatError, match=needle):
        call(m)  # type: ignore[operator]


def test_bad_enclave_parameters() -> None:
    with pytest.raises(FormatError, match="power of two"):
        Measurement(1, 3 * 4096)
    with pytest.raises(FormatError, match="ssa_frame_size"):
        Measurement(0, 1 << 16)
