"""SIGSTRUCT: the 1808-byte enclave signature structure Gramine writes to ``.sig`` files.

Layout (little-endian; Intel SDM Vol. 3D "SIGSTRUCT", Gramine's ``sgx_arch``): HEADER (16) | VENDOR (4)
| DATE (4) | HEADER2 (16) | SWDEFINED (4) | reserved (84) | MODULUS (384) | EXPONENT (4) | SIGNATURE (384)
| MISCSELECT (4) | MISCMASK (4) | CET_ATTRIBUTES (1) | CET_ATTRIBUTES_MASK (1) | reserved (2) |
ISVFAMILYID (16) | ATTRIBUTES (16) | ATTRIBUTEMASK (16) | ENCLAVEHASH (32) | ISVEXTPRODID (16) |
reserved (16) | ISVPRODID (2) | ISVSVN (2) | reserved (12) | Q1 (384) | Q2 (384).

The signature is RSA-3072 with exponent 3, PKCS#1 v1.5 with SHA-256, over bytes 0-127 and 900-1027;
Q1 and Q2 are the helper values EINIT uses to check it without division. MRSIGNER is SHA-256 of the
modulus bytes as stored (little-endian).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import struct
from dataclasses import dataclass, replace

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from fedattest.errors import FormatError
from fedattest.sgx.quote import SGX_FLAGS_DEBUG

SIZE = 1808
HEADER = bytes.fromhex("06000000E10000000000010000000000")
HEADER2 = bytes.fromhex("01010000600000006000000001000000")
VENDOR_INTEL = 0x8086
KEY_BYTES = 384

# (name, offset, size): every byte of the structure, in order.
_FIELDS = (
    ("header", 0, 16), ("vendor", 16, 4), ("date", 20, 4), ("header2", 24, 16), ("swdefined", 40, 4),
    ("reserved1", 44, 84), ("modulus", 128, 384), ("exponent", 512, 4), ("signature", 516, 384),
    ("misc_select", 900, 4), ("misc_mask", 904, 4), ("cet_attributes", 908, 1), ("cet_attributes_mask", 909, 1),
    ("reserved2", 910, 2), ("isv_family_id", 912, 16), ("attributes", 928, 16), ("attribute_mask", 944, 16),
    ("enclave_hash", 960, 32), ("isv_ext_prod_id", 992, 16), ("reserved3", 1008, 16), ("isv_prod_id", 1024, 2),
    ("isv_svn", 1026, 2), ("reserved4", 1028, 12), ("q1", 1040, 384), ("q2", 1424, 384),
)  # fmt: skip
_INT_FIELDS = {"vendor", "swdefined", "exponent", "misc_select", "misc_mask", "cet_attributes", "cet_attributes_mask",
               "isv_prod_id", "isv_svn"}  # fmt: skip


@dataclass(frozen=True)
class Sigstruct:
    """A parsed SIGSTRUCT. Integer fields are ints; ``modulus``, ``signature``, ``q1``, ``q2`` are the
    stored little-endian bytes; reserved fields are kept so that ``parse(x).to_bytes() == x``."""

    header: bytes
    vendor: int
    date: bytes
    header2: bytes
    swdefined: int
    reserved1: bytes
    modulus: bytes
    exponent: int
    signature: bytes
    misc_select: int
    misc_mask: int
    cet_attributes: int
    cet_attributes_mask: int
    reserved2: bytes
    isv_family_id: bytes
    attributes: bytes
    attribute_mask: bytes
    enclave_hash: bytes
    isv_ext_prod_id: bytes
    reserved3: bytes
    isv_prod_id: int
    isv_svn: int
    reserved4: bytes
    q1: bytes
    q2: bytes

    @classmethod
    def parse(cls, data: bytes) -> Sigstruct:
        """Strict: exactly 1808 bytes, the fixed headers, exponent 3. Raises FormatError naming the field."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise FormatError("sigstruct", "expected bytes")
        data = bytes(data)
        if len(data) != SIZE:
            raise FormatError("sigstruct", f"a SIGSTRUCT is {SIZE} bytes, got {len(data)}")
        values: dict[str, int | bytes] = {}
        for name, offset, size in _FIELDS:
            raw = data[offset : offset + size]
            values[name] = int.from_bytes(raw, "little") if name in _INT_FIELDS else raw
        sig = cls(**values)  # type: ignore[arg-type]
        if sig.header != HEADER:
            raise FormatError("sigstruct.header", f"is {sig.header.hex()}, expected {HEADER.hex()}")
        if sig.header2 != HEADER2:
            raise FormatError("sigstruct.header2", f"is {sig.header2.hex()}, expected {HEADER2.hex()}")
        if sig.vendor not in (0, VENDOR_INTEL):
            raise FormatError("sigstruct.vendor", f"{sig.vendor:#x} is neither 0 nor 0x8086")
        if sig.exponent != 3:
            raise FormatError("sigstruct.exponent", f"SGX requires exponent 3, got {sig.exponent}")
        return sig

    def to_bytes(self) -> bytes:
        out = bytearray(SIZE)
        for name, offset, size in _FIELDS:
            value = getattr(self, name)
            raw = value.to_bytes(size, "little") if name in _INT_FIELDS else value
            if len(raw) != size:
                raise FormatError(f"sigstruct.{name}", f"must be {size} bytes, got {len(raw)}")
            out[offset : offset + size] = raw
        return bytes(out)

    # -- what verifiers want ------------------------------------------------------------------------
    def signed_bytes(self) -> bytes:
        raw = self.to_bytes()
        return raw[0:128] + raw[900:1028]

    @property
    def mr_enclave(self) -> bytes:
        return self.enclave_hash

    @property
    def mr_signer(self) -> bytes:
        return hashlib.sha256(self.modulus).digest()

    @property
    def flags(self) -> int:
        return int.from_bytes(self.attributes[:8], "little")

    @property
    def xfrm(self) -> int:
        return int.from_bytes(self.attributes[8:], "little")

    @property
    def debug(self) -> bool:
        return bool(self.flags & SGX_FLAGS_DEBUG)

    @property
    def signing_date(self) -> dt.date | None:
        """The DATE field. Gramine stores year (u16), month, day in binary; Intel's SDK stores BCD
        0xYYYYMMDD. Both are understood; None if neither gives a valid date."""
        year, month, day = struct.unpack("<HBB", self.date)
        try:
            if year >= 1970:
                return dt.date(year, month, day)
        except ValueError:
            pass
        bcd = self.date[::-1].hex()  # the u32 0xYYYYMMDD, as digits
        try:
            return dt.date(int(bcd[0:4]), int(bcd[4:6]), int(bcd[6:8]))
        except ValueError:
            return None

    def verify(self) -> None:
        """Check the RSA-3072 PKCS#1 v1.5 signature and Q1/Q2. Raises FormatError("sigstruct.signature"...)."""
        n = int.from_bytes(self.modulus, "little")
        s = int.from_bytes(self.signature, "little")
        if n.bit_length() != 3072:
            raise FormatError("sigstruct.modulus", f"is {n.bit_length()} bits, SGX requires 3072")
        if s >= n:
            raise FormatError("sigstruct.signature", "is not smaller than the modulus")
        try:
            rsa.RSAPublicNumbers(3, n).public_key().verify(
                s.to_bytes(KEY_BYTES, "big"), self.signed_bytes(), padding.PKCS1v15(), hashes.SHA256()
            )
        except (InvalidSignature, ValueError):
            raise FormatError("sigstruct.signature", "does not verify under the modulus") from None
        q1, q2 = _q1_q2(s, n)
        if int.from_bytes(self.q1, "little") != q1 or int.from_bytes(self.q2, "little") != q2:
            raise FormatError("sigstruct.q1", "Q1/Q2 do not match the signature (EINIT would refuse it)")

    def is_valid(self) -> bool:
        try:
            self.verify()
        except FormatError:
            return False
        return True

    def sign(self, key: rsa.RSAPrivateKey) -> Sigstruct:
        """This SIGSTRUCT signed with ``key`` (RSA-3072, e=3): modulus, signature, Q1 and Q2 filled in."""
        numbers = key.public_key().public_numbers()
        if key.key_size != 3072 or numbers.e != 3:
            raise FormatError(
                "sigstruct.key", f"SGX signing keys are RSA-3072 with exponent 3, got RSA-{key.key_size} e={numbers.e}"
            )
        unsigned = replace(self, modulus=numbers.n.to_bytes(KEY_BYTES, "little"), exponent=3)
        s = int.from_bytes(key.sign(unsigned.signed_bytes(), padding.PKCS1v15(), hashes.SHA256()), "big")
        q1, q2 = _q1_q2(s, numbers.n)
        return replace(
            unsigned,
            signature=s.to_bytes(KEY_BYTES, "little"),
            q1=q1.to_bytes(KEY_BYTES, "little"),
            q2=q2.to_bytes(KEY_BYTES, "little"),
        )

    @classmethod
    def build(
        cls,
        *,
        mr_enclave: bytes,
        attributes: bytes,
        attribute_mask: bytes = b"\xff" * 16,
        isv_prod_id: int = 0,
        isv_svn: int = 0,
        misc_select: int = 0,
        misc_mask: int = 0xFFFFFFFF,
        signing_date: dt.date | None = None,
        vendor: int = 0,
    ) -> Sigstruct:
        """An unsigned SIGSTRUCT (call :meth:`sign`). The date is stored as Gramine does (u16 year, month, day)."""
        when = signing_date or dt.date(2000, 1, 1)
        return cls(
            header=HEADER, vendor=vendor, date=struct.pack("<HBB", when.year, when.month, when.day), header2=HEADER2,
            swdefined=0, reserved1=bytes(84), modulus=bytes(KEY_BYTES), exponent=3, signature=bytes(KEY_BYTES),
            misc_select=misc_select, misc_mask=misc_mask, cet_attributes=0, cet_attributes_mask=0, reserved2=bytes(2),
            isv_family_id=bytes(16), attributes=attributes, attribute_mask=attribute_mask, enclave_hash=mr_enclave,
            isv_ext_prod_id=bytes(16), reserved3=bytes(16), isv_prod_id=isv_prod_id, isv_svn=isv_svn, reserved4=bytes(12),
            q1=bytes(KEY_BYTES), q2=bytes(KEY_BYTES),
        )  # fmt: skip


def _q1_q2(s: int, n: int) -> tuple[int, int]:
    q1 = s * s // n
    q2 = (s * s * s - q1 * s * n) // n
    return q1, q2
