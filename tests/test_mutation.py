"""The mutation sweep: for every real quote the verifier accepts, change every byte of every signed or
bound region — of the quote and of its collateral — one at a time, and require a rejection each time.

A "change" flips the lowest bit of the byte (text stays ASCII, so collateral JSON stays a string).
Certificates and CRLs are changed in their DER bytes, then re-encoded, so the sweep tests the
cryptography, not the base64 decoder. The only bytes left out are the zero padding after the quote
(tolerated by design) and the PEM text around the certificates (whose DER is swept instead).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import cache

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from fedattest.dcap.collateral import Collateral
from fedattest.dcap.verify import QuoteVerifier
from fedattest.errors import FedattestError
from fedattest.sgx.quote import CertificationData, Quote
from tests.conftest import DCAP, dcap_expected, verifiable_cases

EXPECTED = dcap_expected()
# Mutated names make cryptography warn (e.g. a country code of the wrong length) before we reject them.
pytestmark = pytest.mark.filterwarnings("ignore:Attribute's length must be:UserWarning")


@dataclass(frozen=True)
class Vector:
    name: str
    quote: bytes
    collateral: Collateral
    at: int
    root: bytes | None

    def verifier(self) -> QuoteVerifier:
        return QuoteVerifier(self.root)


@cache
def vector(name: str) -> Vector:
    case = EXPECTED[name]
    root = (DCAP / case["root_ca"]).read_bytes() if "root_ca" in case else None
    collateral = Collateral.from_json((DCAP / f"{name}.collateral.json").read_text())
    return Vector(name, (DCAP / f"{name}.quote").read_bytes(), collateral, int(case["at"]), root)


def accepted_vectors() -> list[str]:
    names = []
    for name in verifiable_cases():
        v = vector(name)
        try:
            v.verifier().verify(v.quote, v.collateral, at=v.at)
        except FedattestError:
            continue
        names.append(name)
    return names


ACCEPTED = accepted_vectors()


def flip(data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]


def pem_of(ders: list[bytes]) -> bytes:
    out = b""
    for der in ders:
        b64 = base64.b64encode(der)
        lines = b"\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
        out += b"-----BEGIN CERTIFICATE-----\n" + lines + b"\n-----END CERTIFICATE-----\n"
    return out


def chain_ders(pem: bytes | str) -> list[bytes]:
    data = pem.encode() if isinstance(pem, str) else pem
    return [c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(data)]


# -- regions: (name, number of mutations, build the i-th mutated (quote, collateral)) ----------------------

Mutant = tuple[bytes, Collateral]
Region = tuple[str, int, Callable[[int], Mutant]]


def quote_regions(v: Vector) -> Iterator[Region]:
    q = Quote.parse(v.quote)
    n = q.signed_length()
    sig_len = int.from_bytes(v.quote[n : n + 4], "little")
    end = n + 4 + sig_len
    pem_payload = q.signature.qe.certification_data.data
    pem_start = v.quote.index(pem_payload, n)
    # Everything from the first byte to the end of the signature data, except the PEM payload itself:
    # header, body, signature data length, quote signature, attestation key, (v4/v5: type-6 wrapper),
    # QE report, QE report signature, QE auth data and its size, certification data type and size.
    spans = {
        "header_and_body": (0, n),
        "signature_data": (n, pem_start),  # length, signatures, key, QE report, auth data, cert data header
    }
    assert pem_start + len(pem_payload) == end
    for region, (lo, hi) in spans.items():
        yield region, hi - lo, lambda i, lo=lo: (flip(v.quote, lo + i), v.collateral)
    ders = chain_ders(q.pck_chain_pem)
    for k, label in enumerate(["pck_certificate", "pck_ca_certificate", "pck_root_certificate"][: len(ders)]):

        def mutant(i: int, k: int = k) -> Mutant:
            mutated = [flip(d, i) if j == k else d for j, d in enumerate(ders)]
            cert = CertificationData(5, pem_of(mutated) + b"\x00")
            qe = replace(q.signature.qe, certification_data=cert)
            return replace(q, signature=replace(q.signature, qe=qe)).to_bytes(), v.collateral

        yield label, len(ders[k]), mutant


def collateral_regions(v: Vector) -> Iterator[Region]:
    c = v.collateral
    for field in ("tcb_info", "qe_identity"):
        text = getattr(c, field).encode()
        yield field, len(text), lambda i, f=field, t=text: (v.quote, replace(c, **{f: flip(t, i).decode()}))
    for field in ("tcb_info_signature", "qe_identity_signature", "root_ca_crl", "pck_crl"):
        raw = getattr(c, field)
        yield field, len(raw), lambda i, f=field, r=raw: (v.quote, replace(c, **{f: flip(r, i)}))
    for field in ("pck_crl_issuer_chain", "tcb_info_issuer_chain", "qe_identity_issuer_chain"):
        ders = chain_ders(getattr(c, field))
        for k, der in enumerate(ders):

            def mutant(i: int, f: str = field, k: int = k, ders: list[bytes] = ders) -> Mutant:
                mutated = [flip(d, i) if j == k else d for j, d in enumerate(ders)]
                return v.quote, replace(c, **{f: pem_of(mutated).decode()})

            yield f"{field}[{k}]", len(der), mutant


def regions(name: str) -> dict[str, Region]:
    v = vector(name)
    return {r[0]: r for r in (*quote_regions(v), *collateral_regions(v))}


CASES = [(name, region) for name in ACCEPTED for region in regions(name)]


def test_the_sweep_covers_every_accepted_vector() -> None:
    # Four hardware/independent vectors verify (phala_tdx_v5_outdated is rejected at tcb_level, oasis at
    # root_ca_crl): SGX v3, TDX v4 and TDX v5 are all swept.
    assert set(ACCEPTED) == {"phala_sgx_v3", "phala_tdx_v4", "gotdx_v5_sample", "independent_sim_sgx_v3"}


@pytest.mark.parametrize(("name", "region"), CASES, ids=[f"{n}-{r}" for n, r in CASES])
def test_every_mutation_is_rejected(name: str, region: str) -> None:
    v = vector(name)
    _, count, build = regions(name)[region]
    verifier = v.verifier()  # one per region: collateral caches are keyed by content, so mutants never hit
    accepted = []
    for i in range(count):
        quote, collateral = build(i)
        try:
            verifier.verify(quote, collateral, at=v.at)
        except FedattestError:
            continue
        accepted.append(i)
    assert not accepted, f"{len(accepted)} of {count} mutations of {region} were accepted, at offsets {accepted[:20]}"


def mutation_count() -> int:
    return sum(regions(name)[region][1] for name, region in CASES)


def test_mutation_count() -> None:
    total = mutation_count()
    print(f"\nmutation sweep: {total} mutations over {len(ACCEPTED)} vectors, {len(CASES)} regions")
    assert total > 40_000
