"""Collateral over PCCS/PCS v4 from a real HTTP(S) server on 127.0.0.1, with the on-disk cache."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedattest.cli import app
from fedattest.dcap.collateral import FIELDS, Collateral, validity_window
from fedattest.dcap.pccs import PccsClient, crl_der, normalize_base_url, signed_member
from fedattest.dcap.verify import verify_quote
from fedattest.errors import CollateralError, VerificationError
from fedattest.sgx.quote import Quote
from fedattest.tee import SimulatedPlatform, WorkloadIdentity
from fedattest.tee.sim_pki import issue_certificate, issue_crl, name, new_key, pem
from tests.conftest import DCAP, dcap_expected, verifiable_cases
from tests.pccs_server import PccsServer, self_signed_tls, serve

EXPECTED = dcap_expected()
TCB = "/sgx/certification/v4/tcb"
QE = "/sgx/certification/v4/qe/identity"
PCKCRL = "/sgx/certification/v4/pckcrl"
ROOTCRL = "/sgx/certification/v4/rootcacrl"


def vector(name: str) -> tuple[bytes, Collateral, int, bytes | None]:
    case = EXPECTED[name]
    root = (DCAP / case["root_ca"]).read_bytes() if "root_ca" in case else None
    collateral = Collateral.from_json((DCAP / f"{name}.collateral.json").read_text())
    return (DCAP / f"{name}.quote").read_bytes(), collateral, int(case["at"]), root


def outcome(quote: bytes, collateral: Collateral, root: bytes | None, at: int) -> object:
    try:
        r = verify_quote(quote, collateral, trust_root=root, at=at)
    except VerificationError as exc:
        return exc.step
    return r.tcb_status, r.advisory_ids


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimulatedPlatform, bytes]:
    platform = SimulatedPlatform.create(tmp_path_factory.mktemp("pccs") / "platform")
    quote = platform.tee(WorkloadIdentity(sha256(b"e").digest(), sha256(b"s").digest())).quote(bytes(64))
    return platform, quote


@pytest.mark.parametrize("name", verifiable_cases())
def test_fetched_collateral_equals_the_vector_and_verifies_alike(name: str, tmp_path: Path) -> None:
    quote, collateral, at, root = vector(name)
    with serve(collateral) as server, PccsClient(server.url, cache_dir=tmp_path) as client:
        fetched = client.fetch_for_quote(quote, at=datetime.fromtimestamp(at, UTC))
        tee = "tdx" if Quote.parse(quote).tee == "TDX" else "sgx"
        assert {p for p, _ in server.queries} >= {f"/{tee}/certification/v4/tcb", f"/{tee}/certification/v4/qe/identity"}
    for key in FIELDS:
        assert getattr(fetched, key) == getattr(collateral, key), key
    assert outcome(quote, fetched, root, at) == outcome(quote, collateral, root, at)


def test_requests_name_the_fmspc_and_the_pck_ca(sim: tuple[SimulatedPlatform, bytes], tmp_path: Path) -> None:
    platform, quote = sim
    with serve(platform.collateral()) as server, PccsClient(server.url + "/sgx/certification/v4/") as client:
        client.fetch_for_quote(quote)
        queries = dict(server.queries)
    assert queries[TCB] == {"fmspc": [platform.pck_extension.fmspc.hex().upper()]}
    assert queries[PCKCRL] == {"ca": ["processor"], "encoding": ["der"]}
    assert queries[QE] == {"update": ["standard"]}


def test_cache_serves_without_contacting_the_server(sim: tuple[SimulatedPlatform, bytes], tmp_path: Path) -> None:
    platform, quote = sim
    cache = tmp_path / "cache"
    with serve(platform.collateral()) as server:
        with PccsClient(server.url, cache_dir=cache) as client:
            first = client.fetch_for_quote(quote)
            assert server.total == 4
            assert client.fetch_for_quote(quote) == first
            assert server.total == 4
        with PccsClient(server.url, cache_dir=cache) as again:  # a new process would do the same
            assert again.fetch_for_quote(quote) == first
            assert again.requests == 0
        with PccsClient(server.url, cache_dir=None) as uncached:
            uncached.fetch_for_quote(quote)
            assert uncached.requests == 4
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    (entry,) = cache.iterdir()
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600


def test_cache_is_refreshed_before_it_expires_and_fails_closed(sim: tuple[SimulatedPlatform, bytes], tmp_path: Path) -> None:
    platform, quote = sim
    collateral = platform.collateral()
    _, end = validity_window(collateral)
    with serve(collateral) as server, PccsClient(server.url, cache_dir=tmp_path) as client:
        client.fetch_for_quote(quote)
        near_expiry = end - timedelta(minutes=30)
        client.fetch_for_quote(quote, at=near_expiry)
        assert server.total == 8  # inside the refresh margin: fetched again
        server.behaviour.status[TCB] = 503
        # The refresh fails, but the cached bundle is still valid at that time: it is used.
        assert client.fetch_for_quote(quote, at=near_expiry) == collateral
        # After it has expired, a failing refresh is an error, never stale collateral.
        with pytest.raises(CollateralError, match="HTTP 503"):
            client.fetch_for_quote(quote, at=end + timedelta(seconds=1))


def test_a_corrupt_cache_entry_is_refetched(sim: tuple[SimulatedPlatform, bytes], tmp_path: Path) -> None:
    platform, quote = sim
    with serve(platform.collateral()) as server, PccsClient(server.url, cache_dir=tmp_path) as client:
        client.fetch_for_quote(quote)
        (entry,) = tmp_path.iterdir()
        entry.write_text('{"format": "fedattest-pccs-cache-v1", "collateral": {"tcb_info": 1}}')
        client.fetch_for_quote(quote)
        assert server.total == 8


@pytest.mark.parametrize(
    ("path", "status", "needle"),
    [(TCB, 404, "HTTP 404"), (QE, 500, "HTTP 500"), (PCKCRL, 403, "HTTP 403")],
)
def test_http_errors_name_the_url(sim: tuple[SimulatedPlatform, bytes], path: str, status: int, needle: str) -> None:
    platform, quote = sim
    with serve(platform.collateral()) as server, PccsClient(server.url) as client:
        server.behaviour.status[path] = status
        with pytest.raises(CollateralError, match=needle) as err:
            client.fetch_for_quote(quote)
        assert path in str(err.value)


@pytest.mark.parametrize(
    ("path", "header"), [(TCB, "TCB-Info-Issuer-Chain"), (QE, "SGX-Enclave-Identity-Issuer-Chain"), (PCKCRL, "SGX-PCK-CRL")]
)
def test_missing_issuer_chain_header(sim: tuple[SimulatedPlatform, bytes], path: str, header: str) -> None:
    platform, quote = sim
    with serve(platform.collateral()) as server, PccsClient(server.url) as client:
        server.behaviour.drop_header.add(path)
        with pytest.raises(CollateralError, match=header):
            client.fetch_for_quote(quote)


@pytest.mark.parametrize(
    ("path", "edit", "needle"),
    [
        (TCB, lambda b: b[:-5], "not valid JSON"),
        (TCB, lambda b: b + b"[]", "data after the JSON object"),
        (QE, lambda b: b.replace(b'"signature"', b'"sig"'), "'signature'"),
        (QE, lambda b: b.replace(b'"signature":"', b'"signature":"zz'), "not hex"),
        (TCB, lambda b: b"\xff" + b, "not UTF-8"),
        (PCKCRL, lambda b: b"not a crl", "neither DER, PEM nor hex"),
        (ROOTCRL, lambda b: b"zz", "neither DER, PEM nor hex"),
    ],
    ids=["truncated", "trailing", "no-signature", "bad-hex", "not-utf8", "bad-pck-crl", "bad-root-crl"],
)
def test_malformed_bodies_are_collateral_errors(
    sim: tuple[SimulatedPlatform, bytes], path: str, edit: object, needle: str
) -> None:
    platform, quote = sim
    with serve(platform.collateral()) as server, PccsClient(server.url) as client:
        server.behaviour.edit_body[path] = edit  # type: ignore[assignment]
        with pytest.raises(CollateralError, match=needle):
            client.fetch_for_quote(quote)


def test_connection_refused_is_a_collateral_error(sim: tuple[SimulatedPlatform, bytes]) -> None:
    platform, quote = sim
    server = PccsServer(platform.collateral())
    url = server.url
    server.stop()  # bound, never served, now closed
    with PccsClient(url, timeout=2) as client, pytest.raises(CollateralError, match="ConnectError"):
        client.fetch_for_quote(quote)


def test_tampered_tcb_info_is_fetched_but_rejected_by_the_verifier(sim: tuple[SimulatedPlatform, bytes]) -> None:
    platform, quote = sim
    with serve(platform.collateral()) as server, PccsClient(server.url) as client:
        server.behaviour.edit_body[TCB] = lambda b: b.replace(b'"tcbEvaluationDataNumber":17', b'"tcbEvaluationDataNumber":18')
        fetched = client.fetch_for_quote(quote)
    with pytest.raises(VerificationError) as err:
        verify_quote(quote, fetched, trust_root=platform.root_ca_der)
    assert err.value.step == "tcb_info_signature"


def test_signed_text_is_sliced_exactly_whatever_the_layout(sim: tuple[SimulatedPlatform, bytes]) -> None:
    platform, quote = sim
    with serve(platform.collateral()) as server, PccsClient(server.url) as client:
        server.behaviour.tcb_body_format = '\n{{ "signature" : "{sig}" ,\n  "tcbInfo" :\t{text}\n}}\n'
        fetched = client.fetch_for_quote(quote)
    assert fetched.tcb_info == platform.collateral().tcb_info
    assert verify_quote(quote, fetched, trust_root=platform.root_ca_der).simulated


def test_https_with_a_pinned_ca_and_never_without_verification(sim: tuple[SimulatedPlatform, bytes], tmp_path: Path) -> None:
    platform, quote = sim
    cert, key = self_signed_tls(tmp_path)
    with serve(platform.collateral(), tls=(cert, key)) as server:
        assert server.url.startswith("https://")
        with PccsClient(server.url, verify=str(cert)) as client:
            assert client.fetch_for_quote(quote) == platform.collateral()
        with PccsClient(server.url) as system_cas, pytest.raises(CollateralError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            system_cas.fetch_for_quote(quote)
    with pytest.raises(CollateralError, match="cannot be turned off"):
        PccsClient("https://127.0.0.1:1", verify=False)
    with pytest.raises(CollateralError, match="CA bundle"):
        PccsClient("https://127.0.0.1:1", verify=str(tmp_path / "missing.pem"))


def test_intel_pcs_root_crl_comes_from_the_crl_distribution_point(tmp_path: Path) -> None:
    """Intel's PCS has no rootcacrl path; the root certificate's CRL distribution point is used instead."""
    now = datetime.now(UTC)
    placeholder = Collateral(*([""] * 1 + [b""] * 2 + [""] * 2 + [b""] + [""] * 2 + [b""]))  # type: ignore[arg-type]
    server = PccsServer(placeholder).start()
    try:
        root_key, tcb_key = new_key(), new_key()
        org = "pcs fallback test"
        root = issue_certificate(
            subject=name("Root", org), public_key=root_key.public_key(), issuer=None, issuer_key=root_key,
            not_before=now - timedelta(days=1), not_after=now + timedelta(days=9), ca=True,
            crl_url=f"{server.url}/IntelSGXRootCA.der",
        )  # fmt: skip
        signer = issue_certificate(
            subject=name("TCB", org), public_key=tcb_key.public_key(), issuer=root, issuer_key=root_key,
            not_before=now - timedelta(days=1), not_after=now + timedelta(days=9), ca=False,
        )  # fmt: skip
        root_crl = issue_crl(
            issuer=root, issuer_key=root_key, revoked_serials=[], this_update=now, next_update=now + timedelta(days=1)
        )
        server.collateral = Collateral(
            pck_crl_issuer_chain=pem(signer, root), root_ca_crl=b"", pck_crl=root_crl,
            tcb_info_issuer_chain=pem(signer, root), tcb_info='{"fmspc":"00906ED50000"}', tcb_info_signature=bytes(64),
            qe_identity_issuer_chain=pem(signer, root), qe_identity="{}", qe_identity_signature=bytes(64),
        )  # fmt: skip
        server.behaviour.pcs = True
        server.behaviour.extra["/IntelSGXRootCA.der"] = root_crl
        with PccsClient(server.url) as client:
            fetched = client.fetch("sgx", "00906ED50000", "processor")
        assert fetched.root_ca_crl == root_crl
        assert server.requests[ROOTCRL] == 1 and server.requests["/IntelSGXRootCA.der"] == 1
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://pccs.local:8081", "https://pccs.local:8081"),
        ("https://pccs.local:8081/", "https://pccs.local:8081"),
        ("https://api.trustedservices.intel.com/sgx/certification/v4/", "https://api.trustedservices.intel.com"),
        ("http://127.0.0.1:9/base/tdx/certification/v4", "http://127.0.0.1:9/base"),
    ],
)
def test_base_url_normalisation(url: str, expected: str) -> None:
    assert normalize_base_url(url) == expected


@pytest.mark.parametrize("url", ["ftp://x", "pccs.local", "https://", "https://x/?a=1", "https://x/#f"])
def test_bad_base_urls(url: str) -> None:
    with pytest.raises(CollateralError, match="PCCS URL"):
        normalize_base_url(url)


def test_signed_member_edge_cases() -> None:
    assert signed_member('{"a":{"x":1},"signature":"00ff"}', "a", "t") == ('{"x":1}', b"\x00\xff")
    for body, needle in [
        ('{"a":{},"a":{},"signature":""}', "duplicate"),
        ('["a"]', "not a JSON object"),
        ('{"a":[],"signature":""}', "'a' \\(an object\\)"),
        ('{"a":{} "signature":""}', "expected ','"),
        ('{"a" {}}', "expected ':'"),
    ]:
        with pytest.raises(CollateralError, match=needle):
            signed_member(body, "a", "t")


def test_crl_encodings(sim: tuple[SimulatedPlatform, bytes]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    der = sim[0].collateral().pck_crl
    pem_text = x509.load_der_x509_crl(der).public_bytes(Encoding.PEM)
    assert crl_der(der, "c") == crl_der(der.hex().encode(), "c") == crl_der(pem_text, "c") == der


def test_cli_verifies_with_collateral_from_a_pccs(sim: tuple[SimulatedPlatform, bytes], tmp_path: Path) -> None:
    platform, quote = sim
    quote_file = tmp_path / "q.bin"
    quote_file.write_bytes(quote)
    root = tmp_path / "root.der"
    root.write_bytes(platform.root_ca_der)
    cert, key = self_signed_tls(tmp_path)
    runner = CliRunner()
    with serve(platform.collateral(), tls=(cert, key)) as server:
        args = [
            "quote",
            "verify",
            str(quote_file),
            "--pccs",
            server.url,
            "--pccs-ca",
            str(cert),
            "--cache-dir",
            str(tmp_path / "c"),
        ]
        result = runner.invoke(app, [*args, "--root-ca", str(root), "--allow-simulation", "--json"])
        assert result.exit_code == 0, result.stdout + result.stderr
        assert json.loads(result.stdout)["accepted"] is True
        assert server.total == 4
        again = runner.invoke(app, [*args, "--root-ca", str(root), "--allow-simulation", "--json"])
        assert again.exit_code == 0 and server.total == 4  # from the cache
        untrusted = runner.invoke(
            app, ["quote", "verify", str(quote_file), "--pccs", server.url, "--cache-dir", str(tmp_path / "d")]
        )
        assert untrusted.exit_code == 1 and "certificate" in untrusted.stdout + untrusted.stderr
    missing = runner.invoke(app, ["quote", "verify", str(quote_file), "--pccs", "https://127.0.0.1:1", "--pccs-ca", "nope.pem"])
    assert missing.exit_code == 2 and "--pccs-ca" in missing.stderr
