"""SHA-256 whose intermediate state can be exported and resumed.

``hashlib`` cannot export or import its state, and a measurement template needs exactly that: an
algorithm owner hashes the code part of an enclave and publishes the chaining value; a verifier resumes
from it and hashes only the member-specific tail. The state is exported only at 64-byte block
boundaries (SGX measurement updates are all multiples of 64 bytes), so it is just the eight chaining
words and the byte count: nothing of the input is revealed beyond what SHA-256 itself reveals.

Two backends compute the same thing: OpenSSL's ``SHA256_Init/Update/Final`` on a ``SHA256_CTX`` through
ctypes (fast; the struct is public API in OpenSSL 1.1 and 3.x), and pure Python (the fallback when no
libcrypto can be loaded, and the cross-check in the tests).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
from dataclasses import dataclass
from functools import cache
from typing import Protocol

from fedattest.errors import FormatError

_IV = (0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19)
_K = (
    0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4, 0xAB1C5ED5,
    0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE, 0x9BDC06A7, 0xC19BF174,
    0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F, 0x4A7484AA, 0x5CB0A9DC, 0x76F988DA,
    0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7, 0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967,
    0x27B70A85, 0x2E1B2138, 0x4D2C6DFC, 0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85,
    0xA2BFE8A1, 0xA81A664B, 0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070,
    0x19A4C116, 0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
    0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7, 0xC67178F2,
)  # fmt: skip
_M32 = 0xFFFFFFFF


@dataclass(frozen=True)
class Sha256State:
    """SHA-256 after ``length`` bytes (a multiple of 64): the eight chaining words."""

    h: tuple[int, ...]
    length: int

    def __post_init__(self) -> None:
        if len(self.h) != 8 or not all(isinstance(w, int) and 0 <= w <= _M32 for w in self.h):
            raise FormatError("sha256_state.h", "must be eight 32-bit words")
        if self.length < 0 or self.length % 64 or self.length >= 1 << 61:
            raise FormatError("sha256_state.length", f"{self.length} is not a whole number of 64-byte blocks")

    def to_bytes(self) -> bytes:
        """40 bytes: the chaining value (big-endian words, 32 bytes) and the length (u64 big-endian)."""
        return struct.pack(">8IQ", *self.h, self.length)

    @classmethod
    def from_bytes(cls, data: bytes) -> Sha256State:
        if len(data) != 40:
            raise FormatError("sha256_state", f"expected 40 bytes, got {len(data)}")
        *h, length = struct.unpack(">8IQ", data)
        return cls(tuple(h), length)


def _compress(h: list[int], block: bytes) -> None:
    w = list(struct.unpack(">16I", block))
    for i in range(16, 64):
        x, y = w[i - 15], w[i - 2]
        s0 = ((x >> 7 | x << 25) ^ (x >> 18 | x << 14) ^ (x >> 3)) & _M32
        s1 = ((y >> 17 | y << 15) ^ (y >> 19 | y << 13) ^ (y >> 10)) & _M32
        w.append((w[i - 16] + s0 + w[i - 7] + s1) & _M32)
    a, b, c, d, e, f, g, hh = h
    for i in range(64):
        s1 = ((e >> 6 | e << 26) ^ (e >> 11 | e << 21) ^ (e >> 25 | e << 7)) & _M32
        t1 = (hh + s1 + ((e & f) ^ (~e & g)) + _K[i] + w[i]) & _M32
        s0 = ((a >> 2 | a << 30) ^ (a >> 13 | a << 19) ^ (a >> 22 | a << 10)) & _M32
        t2 = (s0 + ((a & b) ^ (a & c) ^ (b & c))) & _M32
        a, b, c, d, e, f, g, hh = (t1 + t2) & _M32, a, b, c, (d + t1) & _M32, e, f, g
    for i, v in enumerate((a, b, c, d, e, f, g, hh)):
        h[i] = (h[i] + v) & _M32


class _Backend(Protocol):
    def update(self, data: bytes | memoryview) -> None: ...
    def state(self) -> Sha256State: ...
    def digest(self) -> bytes: ...


class PurePythonSha256:
    """Pure-Python SHA-256 with state export (slow: for small inputs and cross-checks)."""

    def __init__(self, state: Sha256State | None = None) -> None:
        self._h = list(state.h if state else _IV)
        self._length = state.length if state else 0
        self._buffer = b""

    def update(self, data: bytes | memoryview) -> None:
        data = self._buffer + bytes(data)
        full = len(data) - len(data) % 64
        for i in range(0, full, 64):
            _compress(self._h, data[i : i + 64])
        self._length += full
        self._buffer = data[full:]

    def state(self) -> Sha256State:
        if self._buffer:
            raise FormatError("sha256_state", "the state can only be exported at a 64-byte block boundary")
        return Sha256State(tuple(self._h), self._length)

    def digest(self) -> bytes:
        h = list(self._h)
        tail = self._buffer + b"\x80"
        tail += bytes(-(len(tail) + 8) % 64) + ((self._length + len(self._buffer)) * 8).to_bytes(8, "big")
        for i in range(0, len(tail), 64):
            _compress(h, tail[i : i + 64])
        return struct.pack(">8I", *h)


class _Ctx(ctypes.Structure):
    # OpenSSL's SHA256_CTX (include/openssl/sha.h): h[8], Nl, Nh, data[16], num, md_len; all 32-bit.
    _fields_ = [
        ("h", ctypes.c_uint32 * 8),
        ("Nl", ctypes.c_uint32),
        ("Nh", ctypes.c_uint32),
        ("data", ctypes.c_uint32 * 16),
        ("num", ctypes.c_uint32),
        ("md_len", ctypes.c_uint32),
    ]


@cache
def _libcrypto() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("crypto")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        for fn in (lib.SHA256_Init, lib.SHA256_Update, lib.SHA256_Final):
            fn.restype = ctypes.c_int
        lib.SHA256_Update.argtypes = [ctypes.POINTER(_Ctx), ctypes.c_char_p, ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    # Self-test: the struct layout must be the one we assume, or this backend is not used.
    probe = OpenSslSha256.__new__(OpenSslSha256)
    probe._lib, probe._ctx = lib, _Ctx()
    lib.SHA256_Init(ctypes.byref(probe._ctx))
    probe.update(b"abc" * 43)  # 129 bytes
    reference = PurePythonSha256()
    reference.update(b"abc" * 43)
    ok = probe.digest() == reference.digest()
    return lib if ok else None


class OpenSslSha256:
    """SHA-256 with state export on OpenSSL's implementation (via ctypes)."""

    def __init__(self, state: Sha256State | None = None) -> None:
        lib = _libcrypto()
        if lib is None:
            raise RuntimeError("libcrypto's SHA256_* functions are not available")
        self._lib = lib
        self._ctx = _Ctx()
        lib.SHA256_Init(ctypes.byref(self._ctx))
        if state is not None:
            for i, word in enumerate(state.h):
                self._ctx.h[i] = word
            bits = state.length * 8
            self._ctx.Nl, self._ctx.Nh = bits & _M32, bits >> 32

    def update(self, data: bytes | memoryview) -> None:
        raw = bytes(data)
        self._lib.SHA256_Update(ctypes.byref(self._ctx), raw, len(raw))

    def state(self) -> Sha256State:
        if self._ctx.num:
            raise FormatError("sha256_state", "the state can only be exported at a 64-byte block boundary")
        bits = self._ctx.Nh << 32 | self._ctx.Nl
        return Sha256State(tuple(self._ctx.h), bits // 8)

    def digest(self) -> bytes:
        copy = _Ctx()
        ctypes.pointer(copy)[0] = self._ctx  # finalising must not consume this object's state
        out = ctypes.create_string_buffer(32)
        self._lib.SHA256_Final(out, ctypes.byref(copy))
        return out.raw


def resumable_sha256(state: Sha256State | None = None) -> _Backend:
    """The fastest available SHA-256 with state export, optionally resumed from ``state``."""
    return OpenSslSha256(state) if _libcrypto() is not None else PurePythonSha256(state)
