"""A minimal, strict DER reader and writer for the few ASN.1 shapes SGX puts in X.509 extensions.

Why by hand: the Intel SGX PCK extension is a SEQUENCE OF {OID, ANY} whose value type depends on the
OID (OCTET STRING, INTEGER, ENUMERATED, BOOLEAN or a nested SEQUENCE). ``cryptography`` parses X.509 but
exposes unknown extensions only as raw bytes, and its declarative ASN.1 module has no ANY; pyasn1 and
asn1crypto would do it but are untyped and far larger than the 100 lines needed. Only definite
lengths in minimal form are accepted (DER), so one value has exactly one encoding.
"""

from __future__ import annotations

from typing import NamedTuple

from fedattest.errors import FormatError

BOOLEAN = 0x01
INTEGER = 0x02
OCTET_STRING = 0x04
OID = 0x06
ENUMERATED = 0x0A
SEQUENCE = 0x30


class Tlv(NamedTuple):
    tag: int
    value: bytes


def read_all(data: bytes, where: str) -> list[Tlv]:
    """Split ``data`` into consecutive TLVs; the TLVs must cover it exactly."""
    out: list[Tlv] = []
    pos = 0
    while pos < len(data):
        tlv, pos = _read_one(data, pos, where)
        out.append(tlv)
    return out


def read_single(data: bytes, where: str) -> Tlv:
    tlvs = read_all(data, where)
    if len(tlvs) != 1:
        raise FormatError(where, f"expected one DER value, found {len(tlvs)}")
    return tlvs[0]


def _read_one(data: bytes, pos: int, where: str) -> tuple[Tlv, int]:
    tag, start, stop = read_header(data, pos, len(data), where)
    return Tlv(tag, data[start:stop]), stop


def read_header(data: bytes, pos: int, end: int, where: str) -> tuple[int, int, int]:
    """The DER value at ``data[pos:end]``: its tag and where its content starts and stops (it must stop
    by ``end``). For readers that walk nested values in place instead of copying each one out."""
    if pos + 2 > end:
        raise FormatError(where, "truncated DER value")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise FormatError(where, "multi-byte DER tags are not used here")
    length = data[pos + 1]
    pos += 2
    if length >= 0x80:
        if length == 0x80:
            raise FormatError(where, "indefinite length is not DER")
        n = length & 0x7F
        if n > 4 or pos + n > end:
            raise FormatError(where, "bad DER length")
        length = int.from_bytes(data[pos : pos + n], "big")
        if length < 0x80 or data[pos] == 0:
            raise FormatError(where, "non-minimal DER length")
        pos += n
    if pos + length > end:
        raise FormatError(where, f"DER value of {length} bytes is truncated")
    return tag, pos, pos + length


def decode_oid(value: bytes, where: str) -> str:
    if not value or value[-1] & 0x80:
        raise FormatError(where, "malformed OBJECT IDENTIFIER")
    arcs: list[int] = []
    acc = 0
    fresh = True
    for byte in value:
        if fresh and byte == 0x80:
            raise FormatError(where, "non-minimal OBJECT IDENTIFIER arc")
        acc = (acc << 7) | (byte & 0x7F)
        fresh = not byte & 0x80
        if fresh:
            arcs.append(acc)
            acc = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in head + arcs[1:])


def decode_int(tlv: Tlv, where: str, tag: int = INTEGER) -> int:
    if tlv.tag != tag or not tlv.value:
        raise FormatError(where, "expected an INTEGER" if tag == INTEGER else "expected an ENUMERATED")
    v = tlv.value
    if len(v) > 1 and ((v[0] == 0 and not v[1] & 0x80) or (v[0] == 0xFF and v[1] & 0x80)):
        raise FormatError(where, "non-minimal INTEGER encoding")
    return int.from_bytes(v, "big", signed=True)


def decode_bool(tlv: Tlv, where: str) -> bool:
    if tlv.tag != BOOLEAN or tlv.value not in (b"\x00", b"\xff"):
        raise FormatError(where, "expected a DER BOOLEAN")
    return tlv.value == b"\xff"


# -- writing ---------------------------------------------------------------------------------
def encode(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + encode_length(len(value)) + value


def encode_length(n: int) -> bytes:
    """A definite length in its minimal (DER) form."""
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def encode_oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        rest = arc >> 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        body.extend(reversed(chunk))
    return encode(OID, bytes(body))


def encode_int(value: int, tag: int = INTEGER) -> bytes:
    # Minimal two's complement: enough bytes for the magnitude bits plus a sign bit (~v for negatives,
    # so that -128 is one byte, 0x80).
    size = (value if value >= 0 else ~value).bit_length() // 8 + 1
    return encode(tag, value.to_bytes(size, "big", signed=True))


def encode_bool(value: bool) -> bytes:
    return encode(BOOLEAN, b"\xff" if value else b"\x00")


def encode_seq(*items: bytes) -> bytes:
    return encode(SEQUENCE, b"".join(items))
