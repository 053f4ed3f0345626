"""SHA-256 with exportable state, and the SGX measurement built on it."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedattest.errors import FormatError
from fedattest.sgx.mrenclave import Measurement, MeasurementTemplate
from fedattest.sgx.sha256_state import OpenSslSha256, PurePythonSha256, Sha256State, _libcrypto, resumable_sha256

BACKENDS = [PurePythonSha256, OpenSslSha256]


def test_the_fast_backend_is_available_here() -> None:
    # CI runs on Linux with OpenSSL 3: the ctypes backend must pass its self-test there.
    assert _libcrypto() is not None
    assert isinstance(resumable_sha256(), OpenSslSha256)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=700), split=st.integers(0, 10), more=st.binary(max_size=200))
def test_digest_equals_hashlib_whatever_the_split(backend: type, data: bytes, split: int, more: bytes) -> None:
    h = backend()
    cut = min(split * 64, len(data))
    h.update(data[:cut])
    h.update(data[cut:])
    h.update(more)
    assert h.digest() == hashlib.sha256(data + more).digest()
    assert h.digest() == hashlib.sha256(data + more).digest()  # digest() does not consume the state


@pytest.mark.parametrize(("exporter", "resumer"), [(a, b) for a in BACKENDS for b in BACKENDS])
@settings(max_examples=60, deadline=None)
@given(blocks=st.integers(0, 12), data=st.binary(max_size=64 * 12), tail=st.binary(max_size=300))
def test_export_and_resume_across_backends(exporter: type, resumer: type, blocks: int, data: bytes, tail: bytes) -> None:
    head = (data * 2)[: blocks * 64].ljust(blocks * 64, b"\x5a")
    h = exporter()
    h.update(head)
    state = h.state()
    assert state.length == len(head)
    restored = Sha256State.from_bytes(state.to_bytes())
    assert restored == state
    r = resumer(restored)
    r.update(tail)
    assert r.digest() == hashlib.sha256(head + tail).digest()


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_only_at_block_boundaries(backend: type) -> None:
    h = backend()
    h.update(b"x" * 65)
    with pytest.raises(FormatError, match="block boundary"):
        h.state()


@pytest.mark.parametrize(("h", "length"), [((0,) * 7, 0), ((1 << 32,) + (0,) * 7, 0), ((0,) * 8, 63), ((0,) * 8, -64)])
def test_bad_states_are_refused(h: tuple[int, ...], length: int) -> None:
    with pytest.raises(FormatError):
        Sha256State(h, length)
    with pytest.raises(FormatError):
        Sha256State.from_bytes(b"\x00" * 39)


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


def test_template_completes_without_the_code_pages() -> None:
    owner = Measurement(ssa_frame_size=1, enclave_size=1 << 16)
    for offset, flags, data in PAGES[:2]:  # the algorithm owner's code pages
        owner.add_page(offset, flags, data)
    published = owner.export().to_bytes()
    member = Measurement.resume(MeasurementTemplate.from_bytes(published))
    for offset, flags, data in PAGES[2:]:  # the member-specific tail
        member.add_page(offset, flags, data)
    assert member.digest() == reference_mrenclave(1, 1 << 16, PAGES)
    assert member.enclave_size == 1 << 16


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
    with pytest.raises(FormatError, match="48 bytes"):
        MeasurementTemplate.from_bytes(b"")
