"""The simulated TEE: platforms, quotes and collateral that Intel's reference verifier (dcap-qvl) and
ours judge alike, in every scenario; files, caching and refusal of bad input."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from pathlib import Path

import dcap_qvl
import pytest
from cryptography import x509

from fedattest.dcap.collateral import Collateral
from fedattest.dcap.result import TcbStatus
from fedattest.dcap.trust import load_trust_root
from fedattest.dcap.verify import QuoteVerifier
from fedattest.errors import TeeError, VerificationError
from fedattest.policy.appraisal import ReferenceValues, appraise
from fedattest.sgx.quote import Quote, ReportBody
from fedattest.tee import TEE, GramineTEE, Scenario, SimulatedPlatform, SimulatedTEE, WorkloadIdentity
from fedattest.tee import simulated as simulated_module

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
IDENTITY = WorkloadIdentity(
    mr_enclave=sha256(b"workload").digest(), mr_signer=sha256(b"signer").digest(), isv_prod_id=7, isv_svn=3
)
REPORT_DATA = sha256(b"claims").digest() * 2

EXPECTED: dict[Scenario, tuple[TcbStatus, tuple[str, ...]] | str] = {
    Scenario.UP_TO_DATE: (TcbStatus.UP_TO_DATE, ()),
    Scenario.SW_HARDENING_NEEDED: (TcbStatus.SW_HARDENING_NEEDED, ("INTEL-SA-00615",)),
    Scenario.OUT_OF_DATE: (TcbStatus.OUT_OF_DATE, ("INTEL-SA-00960",)),
    Scenario.QE_OUT_OF_DATE: (TcbStatus.OUT_OF_DATE, ("INTEL-SA-00656",)),
    Scenario.REVOKED_PCK: "revocation",
}


@pytest.fixture(scope="module")
def platforms(tmp_path_factory: pytest.TempPathFactory) -> dict[Scenario, SimulatedPlatform]:
    base = tmp_path_factory.mktemp("platforms")
    return {s: SimulatedPlatform.create(base / s.value, s, now=NOW) for s in Scenario}


def verifier(platform: SimulatedPlatform) -> QuoteVerifier:
    return QuoteVerifier(load_trust_root(platform.root_ca_der))


def qvl(quote: bytes, collateral: Collateral, root: bytes, at: datetime) -> tuple[str, list[str]] | str:
    c = dcap_qvl.QuoteCollateralV3.from_json(collateral.to_json())
    try:
        r = dcap_qvl.verify_with_root_ca(quote, c, root, int(at.timestamp()))
    except Exception as exc:  # dcap-qvl raises ValueError with its own message
        return str(exc)
    return r.status, sorted(r.advisory_ids)


@pytest.mark.parametrize("scenario", list(Scenario), ids=str)
def test_every_scenario_verifies_as_dcap_qvl_does(scenario: Scenario, platforms: dict[Scenario, SimulatedPlatform]) -> None:
    platform = platforms[scenario]
    quote = platform.tee(IDENTITY).quote(REPORT_DATA)
    collateral = platform.collateral(NOW)
    at = NOW + timedelta(hours=1)
    reference = qvl(quote, collateral, platform.root_ca_der, at)
    expected = EXPECTED[scenario]
    if isinstance(expected, str):
        with pytest.raises(VerificationError) as err:
            verifier(platform).verify(quote, collateral, at=at)
        assert err.value.step == expected
        assert isinstance(reference, str) and "Revoked" in reference
        return
    result = verifier(platform).verify(quote, collateral, at=at)
    assert (result.tcb_status, result.advisory_ids) == expected
    assert reference == (expected[0].value, sorted(expected[1]))
    assert result.simulated
    assert result.mr_enclave == IDENTITY.mr_enclave and result.mr_signer == IDENTITY.mr_signer
    assert (result.isv_prod_id, result.isv_svn, result.debug) == (7, 3, False)
    assert result.report_data == REPORT_DATA
    assert result.fmspc == platform.pck_extension.fmspc


def test_quote_is_a_well_formed_v3_quote(platforms: dict[Scenario, SimulatedPlatform]) -> None:
    platform = platforms[Scenario.UP_TO_DATE]
    raw = platform.tee(IDENTITY).quote(REPORT_DATA)
    quote = Quote.parse(raw)
    assert quote.to_bytes() == raw
    assert (quote.header.version, quote.header.tee_type, quote.tee) == (3, 0, "SGX")
    body = quote.body
    assert isinstance(body, ReportBody)
    assert body.attributes == IDENTITY.attributes and not body.debug
    qe = quote.signature.qe
    assert qe.qe_report.report_data == sha256(quote.signature.attestation_key + qe.qe_auth_data).digest() + bytes(32)
    # Two quotes of the same enclave differ only in their (randomised) ECDSA signature.
    again = Quote.parse(platform.tee(IDENTITY).quote(REPORT_DATA))
    assert again.signed_bytes() == quote.signed_bytes()
    assert again.signature.quote_signature != quote.signature.quote_signature


def test_certificates_carry_what_intel_qvl_requires(platforms: dict[Scenario, SimulatedPlatform]) -> None:
    platform = platforms[Scenario.UP_TO_DATE]
    chain = x509.load_pem_x509_certificates(Quote.parse(platform.tee(IDENTITY).quote(REPORT_DATA)).pck_chain_pem)
    collateral = platform.collateral(NOW)
    chain += x509.load_pem_x509_certificates(collateral.tcb_info_issuer_chain.encode())[:1]
    for cert in chain:
        for ext in (
            x509.AuthorityKeyIdentifier,
            x509.SubjectKeyIdentifier,
            x509.KeyUsage,
            x509.BasicConstraints,
            x509.CRLDistributionPoints,
        ):
            cert.extensions.get_extension_for_class(ext)
    assert platform.pck_certificate.extensions.get_extension_for_oid(x509.ObjectIdentifier("1.2.840.113741.1.13.1"))


def test_simulated_evidence_is_refused_unless_policy_allows(platforms: dict[Scenario, SimulatedPlatform]) -> None:
    platform = platforms[Scenario.UP_TO_DATE]
    result = verifier(platform).verify(platform.tee(IDENTITY).quote(REPORT_DATA), platform.collateral(NOW), at=NOW)
    strict = appraise(result, ReferenceValues(mrenclave=frozenset({IDENTITY.mr_enclave})))
    assert not strict.accepted and "simulat" in strict.reason
    lenient = appraise(result, ReferenceValues(mrenclave=frozenset({IDENTITY.mr_enclave}), allow_simulation=True))
    assert lenient.accepted, lenient.reasons


def test_debug_identity_is_reported_and_refused_by_default(platforms: dict[Scenario, SimulatedPlatform]) -> None:
    platform = platforms[Scenario.UP_TO_DATE]
    debug = WorkloadIdentity(IDENTITY.mr_enclave, IDENTITY.mr_signer, debug=True)
    result = verifier(platform).verify(platform.tee(debug).quote(REPORT_DATA), platform.collateral(NOW), at=NOW)
    assert result.debug
    verdict = appraise(result, ReferenceValues(mrenclave=frozenset({IDENTITY.mr_enclave}), allow_simulation=True))
    assert not verdict.accepted and "debug" in verdict.reason


def test_evidence_of_one_platform_fails_under_another_root(platforms: dict[Scenario, SimulatedPlatform]) -> None:
    a, b = platforms[Scenario.UP_TO_DATE], platforms[Scenario.OUT_OF_DATE]
    with pytest.raises(VerificationError) as err:
        verifier(b).verify(a.tee(IDENTITY).quote(REPORT_DATA), a.collateral(NOW), at=NOW)
    # The first thing checked against the trust root is the root CA CRL (Intel's QVL order).
    assert err.value.step == "root_ca_crl"
    # Mixing one platform's quote with another's collateral fails too (collateral under another root).
    with pytest.raises(VerificationError):
        verifier(a).verify(a.tee(IDENTITY).quote(REPORT_DATA), b.collateral(NOW), at=NOW)


def test_collateral_is_cached_and_reissued_before_it_expires(tmp_path: Path) -> None:
    platform = SimulatedPlatform.create(tmp_path / "p", now=NOW)
    first = platform.collateral(NOW)
    assert platform.collateral(NOW + timedelta(days=10)) == first  # still valid for long enough: cached
    assert SimulatedPlatform.load(tmp_path / "p").collateral(NOW) == first  # the cache is on disk
    late = NOW + timedelta(days=29, hours=12)  # the cached copy would expire within the refresh margin
    renewed = platform.collateral(late)
    assert renewed != first
    quote = platform.tee(IDENTITY).quote(REPORT_DATA)
    assert verifier(platform).verify(quote, renewed, at=late + timedelta(days=1)).tcb_status is TcbStatus.UP_TO_DATE
    with pytest.raises(VerificationError):  # the old collateral really has expired by then
        verifier(platform).verify(quote, first, at=late + timedelta(days=1))
    years_later = NOW + timedelta(days=3 * 365)
    assert verifier(platform).verify(quote, platform.collateral(years_later), at=years_later).simulated


def test_a_corrupt_collateral_cache_is_replaced(tmp_path: Path) -> None:
    platform = SimulatedPlatform.create(tmp_path / "p", now=NOW)
    (tmp_path / "p" / "collateral.json").write_text("{not json")
    collateral = platform.collateral(NOW)
    assert verifier(platform).verify(platform.tee(IDENTITY).quote(REPORT_DATA), collateral, at=NOW).simulated


def test_platform_files_are_private(tmp_path: Path) -> None:
    SimulatedPlatform.create(tmp_path / "p", now=NOW)
    directory = tmp_path / "p"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    secrets = sorted(p.name for p in directory.iterdir() if p.suffix == ".key")
    assert secrets == ["attestation.key", "pck.key", "pck_ca.key", "root_ca.key", "sealing.key", "tcb_signing.key"]
    for name in secrets:
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600, name
    assert len(SimulatedPlatform.load(directory).sealing_secret()) == 32


def test_load_round_trips_and_quotes_verify(tmp_path: Path) -> None:
    created = SimulatedPlatform.create(tmp_path / "p", Scenario.SW_HARDENING_NEEDED, now=NOW)
    loaded = SimulatedPlatform.load(tmp_path / "p")
    assert loaded.description == created.description and loaded.root_ca_der == created.root_ca_der
    result = verifier(created).verify(loaded.tee(IDENTITY).quote(REPORT_DATA), loaded.collateral(NOW), at=NOW)
    assert result.tcb_status is TcbStatus.SW_HARDENING_NEEDED


def test_create_refuses_an_existing_platform_and_leaves_it_alone(tmp_path: Path) -> None:
    platform = SimulatedPlatform.create(tmp_path / "p", now=NOW)
    with pytest.raises(TeeError, match="already exists"):
        SimulatedPlatform.create(tmp_path / "p", now=NOW)
    assert SimulatedPlatform.load(tmp_path / "p").root_ca_der == platform.root_ca_der
    (tmp_path / "file").write_text("x")
    with pytest.raises(TeeError, match="already exists"):
        SimulatedPlatform.create(tmp_path / "file")
    with pytest.raises(TeeError, match="no such directory"):
        SimulatedPlatform.create(tmp_path / "missing" / "p")
    with pytest.raises(TeeError, match="unknown scenario"):
        SimulatedPlatform.create(tmp_path / "q", "sometimes-fine")
    empty = tmp_path / "empty"
    empty.mkdir()
    SimulatedPlatform.create(empty, now=NOW)  # an empty directory is fine


def test_create_leaves_nothing_behind_when_it_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(simulated_module, "_write_platform", crash)
    with pytest.raises(TeeError, match="No space left"):
        SimulatedPlatform.create(tmp_path / "p", now=NOW)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda d: (d / "platform.json").unlink(), "not a simulated platform"),
        (lambda d: (d / "platform.json").write_text('{"format": "x"}'), "platform.json"),
        (lambda d: (d / "pck.key").unlink(), "pck.key: missing"),
        (lambda d: os.chmod(d / "attestation.key", 0o644), "chmod 600"),
        (lambda d: (d / "root_ca.pem").write_text("garbage"), "not a PEM certificate"),
        (lambda d: (d / "tcb_signing.key").write_bytes((d / "pck.key").read_bytes()), "does not belong"),
        (lambda d: (d / "sealing.key").write_bytes(b"short"), "32 bytes"),
    ],
    ids=["no-description", "bad-description", "missing-key", "readable-key", "bad-cert", "swapped-key", "bad-sealing"],
)
def test_load_refuses_damaged_platforms(tmp_path: Path, damage: object, needle: str) -> None:
    directory = tmp_path / "p"
    SimulatedPlatform.create(directory, now=NOW)
    damage(directory)  # type: ignore[operator]
    with pytest.raises(TeeError, match=needle):
        SimulatedPlatform.load(directory)


def test_report_data_must_be_64_bytes(platforms: dict[Scenario, SimulatedPlatform]) -> None:
    tee = platforms[Scenario.UP_TO_DATE].tee(IDENTITY)
    for bad in (b"", bytes(32), bytes(65)):
        with pytest.raises(TeeError, match="exactly 64 bytes"):
            tee.quote(bad)
    with pytest.raises(TeeError, match="must be bytes"):
        tee.quote("x" * 64)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mr_enclave": bytes(31)},
        {"mr_signer": b"x" * 33},
        {"isv_prod_id": 70000},
        {"isv_svn": -1},
        {"config_id": bytes(10)},
        {"xfrm": 1 << 64},
    ],
)
def test_workload_identity_is_validated(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"mr_enclave": bytes(32), "mr_signer": bytes(32), **kwargs}
    with pytest.raises(TeeError, match="workload identity"):
        WorkloadIdentity(**fields)  # type: ignore[arg-type]


def test_simulated_tee_is_a_tee(platforms: dict[Scenario, SimulatedPlatform]) -> None:
    tee = platforms[Scenario.UP_TO_DATE].tee(IDENTITY)
    assert isinstance(tee, SimulatedTEE) and isinstance(tee, TEE)
    assert tee.simulated and tee.kind == "sgx-simulated"


# -- Gramine's /dev/attestation protocol, replayed in a directory -------------------------------------------


def gramine_dir(tmp_path: Path, kind: str | None, quote: bytes = b"") -> Path:
    d = tmp_path / "attestation"
    d.mkdir()
    if kind is not None:
        (d / "attestation_type").write_text(kind)
    (d / "user_report_data").write_bytes(bytes(64))
    (d / "quote").write_bytes(quote)
    return d


def test_gramine_tee_outside_an_enclave_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TeeError, match="not running inside a Gramine SGX enclave"):
        GramineTEE(tmp_path / "nowhere")
    with pytest.raises(TeeError, match="expected 'dcap'"):
        GramineTEE(gramine_dir(tmp_path, "none"))


def test_gramine_tee_writes_report_data_and_reads_the_quote(tmp_path: Path, platforms: dict[Scenario, SimulatedPlatform]) -> None:
    quote = platforms[Scenario.UP_TO_DATE].tee(IDENTITY).quote(REPORT_DATA)
    d = gramine_dir(tmp_path, "dcap\n", quote)
    tee = GramineTEE(d)
    assert not tee.simulated and tee.kind == "sgx-gramine"
    assert tee.quote(REPORT_DATA) == quote
    assert (d / "user_report_data").read_bytes() == REPORT_DATA
    with pytest.raises(TeeError, match="different report data"):
        tee.quote(bytes(64))
    (d / "quote").write_bytes(b"\x03\x00garbage")
    with pytest.raises(TeeError, match="does not parse"):
        tee.quote(REPORT_DATA)
    with pytest.raises(TeeError, match="exactly 64 bytes"):
        tee.quote(b"short")
