"""The mutation sweep: for every real quote the verifier accepts, change every byte of every signed or
bound region — of the quote and of its collateral — one at a time, and require a rejection each time.

A "change" flips the lowest bit of the byte (text stays ASCII, so collateral JSON stays a string).
Certificates and CRLs are changed in their DER bytes, then re-encoded, so the sweep tests the
cryptography, not the base64 decoder.

The quote regions tile the whole quote, so every byte of it is swept. Allowed exceptions (a mutation
that is accepted), each checked to be harmless rather than skipped:

* ``pck_chain_pem_text``: the PEM text of the PCK chain is not covered by any signature; what it encodes
  is. A flip that leaves the decoded certificates byte-identical (OpenSSL reads ``\\v`` as whitespace
  like ``\\n``; the quote's trailing NUL turned into ``\\x01`` lies outside the PEM armour) changes
  nothing that is verified, so it may be accepted. Flips that change a certificate are swept (and must
  fail) in the ``pck_*_certificate`` regions.

Nothing else is exempt: zero padding after a quote is tolerated by design, but a flipped padding byte
is no longer zero and must be refused (``padding``).
"""

from __future__ import annotations

import base64
import itertools
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from fedattest.dcap.collateral import Collateral
from fedattest.dcap.verify import QuoteVerifier
from fedattest.errors import FedattestError, FormatError, VerificationError
from fedattest.sgx.quote import (
    ECDSA_KEY_SIZE,
    ECDSA_SIGNATURE_SIZE,
    HEADER_SIZE,
    SGX_REPORT_BODY_SIZE,
    CertificationData,
    Quote,
)
from tests.conftest import DCAP, dcap_expected, verifiable_cases

# Mutated names make cryptography warn (e.g. a country code of the wrong length) before we reject them.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Attribute's length must be:UserWarning")]
CHUNK = 700  # mutations per test item, so that xdist can spread big regions over workers
MIN_MUTATIONS = 60_000  # the floor the sweep must reach (about 68k today)


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
    case = dcap_expected()[name]
    root = (DCAP / case["root_ca"]).read_bytes() if "root_ca" in case else None
    collateral = Collateral.from_json((DCAP / f"{name}.collateral.json").read_text())
    return Vector(name, (DCAP / f"{name}.quote").read_bytes(), collateral, int(case["at"]), root)


@cache
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


# -- regions ---------------------------------------------------------------------------------------------

Mutant = tuple[bytes, Collateral]


@dataclass(frozen=True)
class Region:
    """``count`` mutations; ``build(None)`` is the unmutated input built the same way (the control),
    ``build(i)`` the i-th mutation. ``harmless(quote, collateral)`` says whether an accepted mutation
    is an allowed exception (see the module docstring); by default none is."""

    name: str
    count: int
    build: Callable[[int | None], Mutant]
    harmless: Callable[[bytes, Collateral], bool] | None = None


def quote_layout(raw: bytes) -> list[tuple[str, int, int]]:
    """The quote cut into named, contiguous spans (start, end) covering every byte, padding included."""
    q = Quote.parse(raw)
    spans: list[tuple[str, int]] = [("header", HEADER_SIZE)]
    if q.header.version == 5:
        spans.append(("body_type_and_size", 6))
    spans += [
        ("body", q.signed_length() - HEADER_SIZE - (6 if q.header.version == 5 else 0)),
        ("signature_data_len", 4),
        ("quote_signature", ECDSA_SIGNATURE_SIZE),
        ("attestation_key", ECDSA_KEY_SIZE),
    ]
    if q.header.version != 3:
        spans.append(("qe_certification_data_header", 6))  # type 6 and its size
    qe = q.signature.qe
    spans += [
        ("qe_report", SGX_REPORT_BODY_SIZE),
        ("qe_report_signature", ECDSA_SIGNATURE_SIZE),
        ("qe_auth_data_size", 2),
        ("qe_auth_data", len(qe.qe_auth_data)),
        ("pck_certification_data_header", 6),  # type 5 and its size
        ("pck_chain_pem_text", len(qe.certification_data.data)),
        ("padding", q.padding),
    ]
    out, pos = [], 0
    for name, size in spans:
        if size:
            out.append((name, pos, pos + size))
        pos += size
    assert pos == len(raw), "the layout must cover the whole quote"
    assert raw[out[-2 if q.padding else -1][1] :].startswith(qe.certification_data.data)
    return out


def quote_regions(v: Vector) -> Iterator[Region]:
    q = Quote.parse(v.quote)
    original_ders = chain_ders(q.pck_chain_pem)
    layout = quote_layout(v.quote)

    def same_certificates(quote: bytes, _: Collateral) -> bool:
        return chain_ders(Quote.parse(quote).pck_chain_pem) == original_ders

    for name, lo, hi in layout:
        if name == "padding":
            continue

        def build(i: int | None, lo: int = lo) -> Mutant:
            return (v.quote if i is None else flip(v.quote, lo + i)), v.collateral

        yield Region(name, hi - lo, build, same_certificates if name == "pck_chain_pem_text" else None)

    # Zero padding is tolerated, flipped padding is not. Quotes that came without padding get 16 bytes.
    padded = v.quote if q.padding else v.quote + bytes(16)
    n_pad = q.padding or 16
    yield Region("padding", n_pad, lambda i: ((padded if i is None else flip(padded, len(padded) - n_pad + i)), v.collateral))

    labels = ["pck_certificate", "pck_ca_certificate", "pck_root_certificate"]
    for k, label in enumerate(labels[: len(original_ders)]):

        def mutant(i: int | None, k: int = k) -> Mutant:
            ders = [flip(d, i) if j == k and i is not None else d for j, d in enumerate(original_ders)]
            cert = CertificationData(5, pem_of(ders) + b"\x00")
            qe = replace(q.signature.qe, certification_data=cert)
            return replace(q, signature=replace(q.signature, qe=qe)).to_bytes(), v.collateral

        yield Region(label, len(original_ders[k]), mutant)


def with_field(c: Collateral, field: str, value: bytes | str) -> Collateral:
    changes: dict[str, Any] = {field: value}
    return replace(c, **changes)


def collateral_regions(v: Vector) -> Iterator[Region]:
    c = v.collateral
    for field in ("tcb_info", "qe_identity"):  # the exact signed text
        text = getattr(c, field).encode()

        def text_mutant(i: int | None, f: str = field, t: bytes = text) -> Mutant:
            return v.quote, (c if i is None else with_field(c, f, flip(t, i).decode()))

        yield Region(field, len(text), text_mutant)
    for field in ("tcb_info_signature", "qe_identity_signature", "root_ca_crl", "pck_crl"):  # raw bytes / CRL DER
        raw = getattr(c, field)

        def raw_mutant(i: int | None, f: str = field, r: bytes = raw) -> Mutant:
            return v.quote, (c if i is None else with_field(c, f, flip(r, i)))

        yield Region(field, len(raw), raw_mutant)
    for field in ("pck_crl_issuer_chain", "tcb_info_issuer_chain", "qe_identity_issuer_chain"):
        ders = chain_ders(getattr(c, field))
        for k, der in enumerate(ders):

            def chain_mutant(i: int | None, f: str = field, k: int = k, ders: list[bytes] = ders) -> Mutant:
                mutated = [flip(d, i) if j == k and i is not None else d for j, d in enumerate(ders)]
                return v.quote, with_field(c, f, pem_of(mutated).decode())

            yield Region(f"{field}[{k}]", len(der), chain_mutant)


@cache
def regions(name: str) -> dict[str, Region]:
    v = vector(name)
    return {r.name: r for r in (*quote_regions(v), *collateral_regions(v))}


def cases() -> list[tuple[str, str, int, int]]:
    """(vector, region, first, end) items, biggest regions first so that xdist balances the load."""
    out = []
    collateral_region_names = {r.name for n in accepted_vectors() for r in collateral_regions(vector(n))}
    for name in accepted_vectors():
        for region in regions(name).values():
            out += [(name, region.name, lo, min(lo + CHUNK, region.count)) for lo in range(0, region.count, CHUNK)]
    return sorted(out, key=lambda c: -(c[3] - c[2]) * (3 if c[1] in collateral_region_names else 1))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The sweep's items come from the vectors' bytes: computed when pytest collects this module, not when
    it imports it."""
    if metafunc.definition.name == "test_layout_covers_every_byte_of_the_quote":
        metafunc.parametrize("name", accepted_vectors())
    elif metafunc.definition.name == "test_every_mutation_is_rejected":
        items = cases()
        metafunc.parametrize(("name", "region", "lo", "hi"), items, ids=[f"{n}-{r}-{lo}" for n, r, lo, _ in items])


# -- tests -----------------------------------------------------------------------------------------------


def test_the_sweep_covers_every_accepted_vector() -> None:
    # Four hardware/independent vectors verify (phala_tdx_v5_outdated is rejected at tcb_level, oasis at
    # root_ca_crl): SGX v3, TDX v4 (with zero padding) and TDX v5 are all swept.
    assert set(accepted_vectors()) == {"phala_sgx_v3", "phala_tdx_v4", "gotdx_v5_sample", "independent_sim_sgx_v3"}
    assert Quote.parse(vector("phala_tdx_v4").quote).padding > 0


def test_layout_covers_every_byte_of_the_quote(name: str) -> None:
    layout = quote_layout(vector(name).quote)
    assert layout[0][1] == 0 and layout[-1][2] == len(vector(name).quote)
    assert all(a[2] == b[1] for a, b in itertools.pairwise(layout))
    swept = {r.name for r in regions(name).values()}
    assert {span for span, _, _ in layout} <= swept


def test_every_mutation_is_rejected(name: str, region: str, lo: int, hi: int) -> None:
    v = vector(name)
    r = regions(name)[region]
    # One verifier per item, warmed with the unmutated input: its caches are keyed by content, so they
    # speed up the mutants without ever answering for one, and a warm cache is what a service has.
    verifier = v.verifier()
    quote, collateral = r.build(None)
    verifier.verify(quote, collateral, at=v.at)  # control: the unmutated input, built the same way, verifies
    accepted, harmless = [], 0
    steps: Counter[str] = Counter()
    for i in range(lo, hi):
        quote, collateral = r.build(i)
        assert (quote, collateral) != (v.quote, v.collateral)
        try:
            verifier.verify(quote, collateral, at=v.at)
        except VerificationError as exc:
            steps[exc.step] += 1
            continue
        except FormatError as exc:
            steps[exc.field] += 1
            continue
        except FedattestError as exc:
            steps[type(exc).__name__] += 1
            continue
        if r.harmless is not None and r.harmless(quote, collateral):
            harmless += 1
            continue
        accepted.append(i)
    assert not accepted, f"{len(accepted)} of {hi - lo} mutations of {region} were accepted, at offsets {accepted[:20]}"
    assert sum(steps.values()) + harmless == hi - lo
    if r.harmless is not None:  # the exception stays an exception: most PEM text flips break a certificate
        assert harmless < (hi - lo) // 10, (harmless, steps)


def mutation_count() -> int:
    return sum(hi - lo for _, _, lo, hi in cases())


def test_mutation_count(record_property: Callable[[str, object], None]) -> None:
    total = mutation_count()
    record_property("mutations", total)
    print(f"\nmutation sweep: {total} mutations over {len(accepted_vectors())} vectors, {len(cases())} items")
    assert total > MIN_MUTATIONS
    # Every named region of every vector is in the sweep.
    for name in accepted_vectors():
        assert {r for n, r, _, _ in cases() if n == name} == set(regions(name))
