"""The SGX enclave measurement (MRENCLAVE), as a streaming object.

MRENCLAVE is SHA-256 over a log of the instructions that built the enclave (Intel SDM Vol. 3D, 39.1 /
"ECREATE", "EADD", "EEXTEND"), each update a multiple of 64 bytes, little-endian:

- ECREATE: ``"ECREATE\\0"`` ‖ SSAFRAMESIZE (u32, in pages) ‖ SIZE (u64) ‖ 44 zero bytes;
- EADD:    ``"EADD\\0\\0\\0\\0"`` ‖ page offset (u64) ‖ the first 48 bytes of SECINFO (FLAGS u64, then zeros);
- EEXTEND: ``"EEXTEND\\0"`` ‖ offset (u64) ‖ 48 zero bytes, then the 256 bytes measured.

A page is measured by one EADD and sixteen EEXTENDs; heap pages are often added without EEXTEND.
"""

from __future__ import annotations

import hashlib
import struct

from fedattest.errors import FormatError

PAGE = 4096
_ECREATE = struct.Struct("<8sIQ44s")
_EADD = struct.Struct("<8sQQ40s")
_EEXTEND = struct.Struct("<8sQ48s")


class Measurement:
    """MRENCLAVE, built page by page. ``Measurement(ssa_frame_size, enclave_size)`` does ECREATE."""

    def __init__(self, ssa_frame_size: int, enclave_size: int) -> None:
        if not 1 <= ssa_frame_size <= 0xFFFFFFFF:
            raise FormatError("measurement.ssa_frame_size", f"{ssa_frame_size} is out of range (pages, at least 1)")
        if enclave_size < PAGE or enclave_size & (enclave_size - 1):
            raise FormatError("measurement.enclave_size", f"{enclave_size} is not a power of two of at least one page")
        self.enclave_size = enclave_size
        self._sha = hashlib.sha256()
        self._sha.update(_ECREATE.pack(b"ECREATE", ssa_frame_size, enclave_size, b""))

    def eadd(self, offset: int, secinfo_flags: int) -> None:
        self._check(offset, PAGE)
        self._sha.update(_EADD.pack(b"EADD", offset, secinfo_flags, b""))

    def eextend(self, offset: int, data: bytes) -> None:
        if len(data) != 256 or offset % 256:
            raise FormatError("measurement.eextend", "EEXTEND measures 256 bytes at a 256-byte aligned offset")
        self._check(offset, 256)
        self._sha.update(_EEXTEND.pack(b"EEXTEND", offset, b"") + data)

    def add_page(self, offset: int, secinfo_flags: int, data: bytes | None) -> None:
        """EADD the page at ``offset``; with ``data`` (4096 bytes), also EEXTEND all of it."""
        self.eadd(offset, secinfo_flags)
        if data is None:
            return
        if len(data) != PAGE:
            raise FormatError("measurement.add_page", f"a page is {PAGE} bytes, got {len(data)}")
        headers = [_EEXTEND.pack(b"EEXTEND", offset + i, b"") + data[i : i + 256] for i in range(0, PAGE, 256)]
        self._sha.update(b"".join(headers))

    def _check(self, offset: int, size: int) -> None:
        if offset < 0 or offset % size or offset + size > self.enclave_size:
            raise FormatError("measurement.offset", f"offset {offset:#x} is outside the enclave or misaligned")

    def digest(self) -> bytes:
        """MRENCLAVE (32 bytes) as EINIT would record it now; the measurement can go on afterwards."""
        return self._sha.digest()
