"""The Intel SGX PCK certificate extension (OID 1.2.840.113741.1.13.1).

Structure per Intel's "SGX PCK Certificate and CRL Profile": a SEQUENCE of {OID, value} pairs carrying
the PPID, the platform TCB the certificate was issued for (16 SGX TCB components, PCESVN, CPUSVN), the
PCE ID, the FMSPC, the SGX type, and for platform-CA certificates the platform instance ID and the
configuration flags. ``parse`` takes the extension's DER value; ``to_der`` builds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from fedattest.errors import FormatError
from fedattest.sgx import der

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
_P = SGX_EXTENSION_OID
OID_PPID = f"{_P}.1"
OID_TCB = f"{_P}.2"
OID_PCESVN = f"{_P}.2.17"
OID_CPUSVN = f"{_P}.2.18"
OID_PCEID = f"{_P}.3"
OID_FMSPC = f"{_P}.4"
OID_SGX_TYPE = f"{_P}.5"
OID_PLATFORM_INSTANCE_ID = f"{_P}.6"
OID_CONFIGURATION = f"{_P}.7"
OID_DYNAMIC_PLATFORM = f"{_P}.7.1"
OID_CACHED_KEYS = f"{_P}.7.2"
OID_SMT_ENABLED = f"{_P}.7.3"


_WHERE = "pck_certificate.sgx_extension"
# (OID, field name in errors) of the 16 SGX TCB components, built once rather than at every parse.
_COMPONENTS = tuple((f"{OID_TCB}.{i}", f"{_WHERE}.tcb.comp{i:02d}_svn") for i in range(1, 17))


class SgxType(IntEnum):
    STANDARD = 0
    SCALABLE = 1
    SCALABLE_WITH_INTEGRITY = 2


@dataclass(frozen=True)
class PlatformConfiguration:
    dynamic_platform: bool | None = None
    cached_keys: bool | None = None
    smt_enabled: bool | None = None


@dataclass(frozen=True)
class PckExtension:
    ppid: bytes
    tcb_components: tuple[int, ...]  # SGX TCB components 1..16, in order
    pcesvn: int
    cpusvn: bytes
    pceid: bytes
    fmspc: bytes
    sgx_type: int
    platform_instance_id: bytes | None = None
    configuration: PlatformConfiguration | None = None

    @classmethod
    def parse(cls, value: bytes) -> PckExtension:
        where = _WHERE
        fields = _pairs(der.read_single(value, where), where)
        missing = [o for o in (OID_PPID, OID_TCB, OID_PCEID, OID_FMSPC, OID_SGX_TYPE) if o not in fields]
        if missing:
            raise FormatError(where, f"missing {', '.join(missing)}")

        tcb = _pairs(fields[OID_TCB], f"{where}.tcb")
        components = []
        for i, (oid, field) in enumerate(_COMPONENTS, 1):
            if oid not in tcb:
                raise FormatError(f"{where}.tcb", f"missing SGX TCB component {i} ({oid})")
            svn = der.decode_int(tcb[oid], field)
            if not 0 <= svn <= 255:
                raise FormatError(field, f"{svn} is out of range 0..255")
            components.append(svn)
        if OID_PCESVN not in tcb or OID_CPUSVN not in tcb:
            raise FormatError(f"{where}.tcb", "missing PCESVN or CPUSVN")
        pcesvn = der.decode_int(tcb[OID_PCESVN], f"{where}.tcb.pcesvn")
        if not 0 <= pcesvn <= 0xFFFF:
            raise FormatError(f"{where}.tcb.pcesvn", f"{pcesvn} is out of range 0..65535")
        cpusvn = _octets(tcb[OID_CPUSVN], 16, f"{where}.tcb.cpusvn")

        config = None
        if OID_CONFIGURATION in fields:
            cfg = _pairs(fields[OID_CONFIGURATION], f"{where}.configuration")

            def flag(oid: str, name: str) -> bool | None:
                return der.decode_bool(cfg[oid], f"{where}.configuration.{name}") if oid in cfg else None

            config = PlatformConfiguration(
                dynamic_platform=flag(OID_DYNAMIC_PLATFORM, "dynamic_platform"),
                cached_keys=flag(OID_CACHED_KEYS, "cached_keys"),
                smt_enabled=flag(OID_SMT_ENABLED, "smt_enabled"),
            )
        return cls(
            ppid=_octets(fields[OID_PPID], 16, f"{where}.ppid"),
            tcb_components=tuple(components),
            pcesvn=pcesvn,
            cpusvn=cpusvn,
            pceid=_octets(fields[OID_PCEID], 2, f"{where}.pceid"),
            fmspc=_octets(fields[OID_FMSPC], 6, f"{where}.fmspc"),
            sgx_type=der.decode_int(fields[OID_SGX_TYPE], f"{where}.sgx_type", der.ENUMERATED),
            platform_instance_id=(
                _octets(fields[OID_PLATFORM_INSTANCE_ID], 16, f"{where}.platform_instance_id")
                if OID_PLATFORM_INSTANCE_ID in fields
                else None
            ),
            configuration=config,
        )

    def to_der(self) -> bytes:
        if len(self.tcb_components) != 16:
            raise FormatError("pck_extension.tcb_components", "exactly 16 components are required")

        def pair(oid: str, value: bytes) -> bytes:
            return der.encode_seq(der.encode_oid(oid), value)

        tcb = [pair(f"{OID_TCB}.{i + 1}", der.encode_int(svn)) for i, svn in enumerate(self.tcb_components)]
        tcb.append(pair(OID_PCESVN, der.encode_int(self.pcesvn)))
        tcb.append(pair(OID_CPUSVN, der.encode(der.OCTET_STRING, self.cpusvn)))
        items = [
            pair(OID_PPID, der.encode(der.OCTET_STRING, self.ppid)),
            pair(OID_TCB, der.encode_seq(*tcb)),
            pair(OID_PCEID, der.encode(der.OCTET_STRING, self.pceid)),
            pair(OID_FMSPC, der.encode(der.OCTET_STRING, self.fmspc)),
            pair(OID_SGX_TYPE, der.encode_int(self.sgx_type, der.ENUMERATED)),
        ]
        if self.platform_instance_id is not None:
            items.append(pair(OID_PLATFORM_INSTANCE_ID, der.encode(der.OCTET_STRING, self.platform_instance_id)))
        if self.configuration is not None:
            c = self.configuration
            flags = [
                pair(oid, der.encode_bool(v))
                for oid, v in (
                    (OID_DYNAMIC_PLATFORM, c.dynamic_platform),
                    (OID_CACHED_KEYS, c.cached_keys),
                    (OID_SMT_ENABLED, c.smt_enabled),
                )
                if v is not None
            ]
            items.append(pair(OID_CONFIGURATION, der.encode_seq(*flags)))
        return der.encode_seq(*items)


def _pairs(tlv: der.Tlv, where: str) -> dict[str, der.Tlv]:
    """Decode a SEQUENCE OF SEQUENCE {OID, value} into a dict; duplicate OIDs are an error."""
    if tlv.tag != der.SEQUENCE:
        raise FormatError(where, "expected a SEQUENCE")
    data = tlv.value
    out: dict[str, der.Tlv] = {}
    # Walked in place (read_header), not split into a Tlv per item and per part: this runs for every new
    # PCK certificate a verifier sees, and the extension holds some 30 pairs.
    pos, end = 0, len(data)
    while pos < end:
        tag, start, stop = der.read_header(data, pos, end, where)
        if tag != der.SEQUENCE:
            raise FormatError(where, "expected a SEQUENCE {OID, value}")
        oid_tag, oid_start, oid_stop = der.read_header(data, start, stop, where)
        if oid_stop == stop:  # the OID alone
            raise FormatError(where, "expected a SEQUENCE {OID, value}")
        value_tag, value_start, value_stop = der.read_header(data, oid_stop, stop, where)
        if value_stop != stop or oid_tag != der.OID:
            raise FormatError(where, "expected a SEQUENCE {OID, value}")
        # Known OIDs are looked up by their encoding: decoding every arc costs more than the rest of
        # the parse.
        raw_oid = data[oid_start:oid_stop]
        oid = _KNOWN_OIDS.get(raw_oid) or der.decode_oid(raw_oid, where)
        if oid in out:
            raise FormatError(where, f"duplicate {oid}")
        out[oid] = der.Tlv(value_tag, data[value_start:value_stop])
        pos = stop
    return out


_KNOWN_OIDS: dict[bytes, str] = {
    der.encode_oid(oid)[2:]: oid
    for oid in (
        OID_PPID, OID_TCB, OID_PCESVN, OID_CPUSVN, OID_PCEID, OID_FMSPC, OID_SGX_TYPE, OID_PLATFORM_INSTANCE_ID,
        OID_CONFIGURATION, OID_DYNAMIC_PLATFORM, OID_CACHED_KEYS, OID_SMT_ENABLED,
        *(f"{OID_TCB}.{i}" for i in range(1, 17)),
    )
}  # fmt: skip


def _octets(tlv: der.Tlv, size: int, where: str) -> bytes:
    if tlv.tag != der.OCTET_STRING:
        raise FormatError(where, "expected an OCTET STRING")
    if len(tlv.value) != size:
        raise FormatError(where, f"expected {size} bytes, got {len(tlv.value)}")
    return tlv.value
