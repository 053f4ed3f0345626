"""Collateral over the PCCS/PCS v4 API from a real HTTP(S) server on 127.0.0.1, and the on-disk cache."""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from typer.testing import CliRunner

from fedattest.cli import app
from fedattest.dcap.collateral import FIELDS, Collateral
from fedattest.dcap.tcb import TcbInfo
from fedattest.dcap.verify import verify_quote
from fedattest.errors import CollateralError, VerificationError
from fedattest.pccs import (
    MAX_RESPONSE_BYTES,
    REFRESH_MARGIN,
    PccsClient,
    Platform,
    crl_der,
    decode_chain,
    normalize_base_url,
    root_crl_url,
    signed_member,
)
from fedattest.sgx.quote import Quote
from fedattest.tee import SimulatedPlatform, WorkloadIdentity
from fedattest.tee.sim_pki import issue_certificate, issue_crl, name, new_key, pem
from tests.conftest import DCAP, dcap_expected, verifiable_cases
from tests.pccs_server import PCKCRL, ROOTCRL, PccsServer, qe_path, self_signed_tls, serve, tcb_path

TCB, QE = tcb_path("sgx"), qe_path("sgx")
# The PCK CA of each vector's PCK certificate (its issuer: "Intel SGX PCK Processor/Platform CA").
VECTOR_CA = {
    "gotdx_v5_sample": "platform",
    "independent_sim_sgx_v3": "processor",
    "oasis_sgx_v3": "platform",
    "phala_sgx_v3": "processor",
    "phala_tdx_v4": "platform",
    "phala_tdx_v5_outdated": "platform",
}
runner = CliRunner()


def vector(case: str) -> tuple[bytes, Collateral, int, bytes | None]:
    expected = dcap_expected()[case]
    root = (DCAP / expected["root_ca"]).read_bytes() if "root_ca" in expected else None
    collateral = Collateral.from_json((DCAP / f"{case}.collateral.json").read_text())
    return (DCAP / f"{case}.quote").read_bytes(), collateral, int(expected["at"]), root


def outcome(quote: bytes, collateral: Collateral, root: bytes | None, at: int) -> object:
    """The verifier's result: (TCB status, advisories) or the failing step."""
    try:
        r = verify_quote(quote, collateral, trust_root=root, at=at)
    except VerificationError as exc:
        return exc.step
    return r.tcb_status, r.advisory_ids


def bump_last_digit(pattern: bytes) -> Callable[[bytes], bytes]:
    """A body edit changing exactly one byte: the last digit of the number after ``pattern``."""

    def edit(body: bytes) -> bytes:
        m = re.search(re.escape(pattern) + rb"(\d+)", body)
        assert m is not None, pattern
        i = m.end() - 1
        return body[:i] + str((int(body[i : i + 1]) + 1) % 10).encode() + body[i + 1 :]

    return edit


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimulatedPlatform, bytes]:
    platform = SimulatedPlatform.create(tmp_path_factory.mktemp("pccs") / "platform")
    quote = platform.tee(WorkloadIdentity(sha256(b"e").digest(), sha256(b"s").digest())).quote(bytes(64))
    return platform, quote


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_tls(tmp_path_factory.mktemp("tls"))


# -- the test vectors through a real server ------------------------------------------------------------


@pytest.mark.parametrize("case", verifiable_cases())
def test_fetched_collateral_equals_the_vector_and_verifies_alike(case: str, tmp_path: Path) -> None:
    quote, collateral, at, root = vector(case)
    tee = Quote.parse(quote).tee.lower()
    with serve(collateral) as server, PccsClient(server.url, cache_dir=tmp_path) as client:
        fetched = client.fetch_for_quote(Quote.parse(quote), at=datetime.fromtimestamp(at, UTC))
        queries = dict(server.queries)
    assert set(queries) == {PCKCRL, tcb_path(tee), qe_path(tee), ROOTCRL}, queries
    assert queries[tcb_path(tee)] == {"fmspc": [json.loads(collateral.tcb_info)["fmspc"].upper()]}
    assert queries[PCKCRL] == {"ca": [VECTOR_CA[case]], "encoding": ["der"]}
    assert queries[qe_path(tee)] == {"update": ["standard"]}
    for key in FIELDS:
        assert getattr(fetched, key) == getattr(collateral, key), key
    assert fetched == collateral
    assert outcome(quote, fetched, root, at) == outcome(quote, collateral, root, at)


@pytest.mark.parametrize("case", ["phala_sgx_v3", "phala_tdx_v4", "independent_sim_sgx_v3"])
def test_one_byte_changed_in_tcb_info_is_fetched_but_rejected_by_the_verifier(case: str) -> None:
    quote, collateral, at, root = vector(case)
    assert outcome(quote, collateral, root, at)[0] in ("UpToDate", "ConfigurationAndSWHardeningNeeded")  # type: ignore[index]
    tee = Quote.parse(quote).tee.lower()
    with serve(collateral) as server, PccsClient(server.url) as client:
        server.behaviour.edit_body[tcb_path(tee)] = bump_last_digit(b'"tcbEvaluationDataNumber":')
        fetched = client.fetch_for_quote(quote, at=datetime.fromtimestamp(at, UTC))
    assert len(fetched.tcb_info) == len(collateral.tcb_info)
    assert sum(a != b for a, b in zip(fetched.tcb_info, collateral.tcb_info, strict=True)) == 1
    assert fetched.tcb_info_signature == collateral.tcb_info_signature
    with pytest.raises(VerificationError) as err:
        verify_quote(quote, fetched, trust_root=root, at=at)
    assert err.value.step == "tcb_info_signature"


def test_one_byte_changed_in_qe_identity_is_rejected_by_the_verifier(sim: tuple[SimulatedPlatform, bytes]) -> None:
    platform, quote = sim
    with serve(platform.collateral()) as server, PccsClient(server.url) as client:
        server.behaviour.edit_body[QE] = bump_last_digit(b'"isvprodid":')
        fetched = client.fetch_for_quote(quote)
    with pytest.raises(VerificationError) as err:
        verify_quote(quote, fetched, trust_root=platform.root_ca_der)
    assert err.value.step == "qe_identity_signature"


def test_signed_text_is_sliced_exactly_whatever_the_layout(sim: tuple[SimulatedPlatform, bytes]) -> None:
    platform, quote = sim
    with serve(platform.collateral()) as server, PccsClient(server.url) as client:
        server.behaviour.tcb_body_format = '\n{{ "signature" : "{sig}" ,\n  "tcbInfo" :\t{text}\n}}\n'
        server.behaviour.qe_body_format = '{{"enclaveIdentity": {text}, "signature": "{sig}", "extra": [1, {{"x": 2}}]}}'
        fetched = client.fetch_for_quote(quote)
    assert fetched == platform.collateral()
    assert verify_quote(quote, fetched, trust_root=platform.root_ca_der).simulated


def test_requests_name_the_fmspc_and_the_pck_ca(sim: tuple[SimulatedPlatform, bytes]) -> None:
    platform, quote = sim
    with serve(platform.collateral()) as server, PccsClient(server.url + "/sgx/certification/v4/") as client:
        client.fetch_for_quote(quote)
        queries = dict(server.queries)
    assert queries[TCB] == {"fmspc": [platform.pck_extension.fmspc.hex().upper()]}
    assert queries[PCKCRL] == {"ca": ["processor"], "encoding": ["der"]}


def test_older_tcb_info_header_name_and_other_crl_encodings(sim: tuple[SimulatedPlatform, bytes]) -> None:
    platform, quote = sim
    collateral = platform.collateral()

    def as_pem(der: bytes) -> bytes:
        return x509.load_der_x509_crl(der).public_bytes(Encoding.PEM)

    with serve(collateral) as server, PccsClient(server.url) as client:
        server.behaviour.tcb_chain_header = "SGX-TCB-Info-Issuer-Chain"
        server.behaviour.edit_body[PCKCRL] = as_pem
        server.behaviour.edit_body[ROOTCRL] = lambda b: bytes.fromhex(b.decode())  # DER instead of hex
        assert client.fetch_for_quote(quote) == collateral
        server.behaviour.edit_body[PCKCRL] = lambda b: b.hex().upper().encode() + b"\n"
        server.behaviour.edit_body[ROOTCRL] = lambda b: as_pem(bytes.fromhex(b.decode()))
        assert client.fetch_for_quote(quote) == collateral


# -- the cache ---------------------------------------------------------------------------------------------


def test_cache_serves_without_contacting_the_server(sim: tuple[SimulatedPlatform, bytes], tmp_path: Path) -> None:
    platform, quote = sim
    cache = tmp_path / "cache"
    with serve(platform.collateral()) as server:
        with PccsClient(server.url, cache_dir=cache) as client:
            first = client.fetch_for_quote(quote)
            assert server.total == 4
            assert client.fetch_for_quote(quote) == first
            assert server.total == 4 and client.requests == 4
        with PccsClient(server.url, cache_dir=cache) as again:  # a new process would do the same
            assert again.fetch_for_quote(quote) == first
            assert again.requests == 0 and server.total == 4
        with PccsClient(server.url, cache_dir=None) as uncached:
            uncached.fetch_for_quote(quote)
            assert uncached.requests == 4
    with serve(platform.collateral()) as other, PccsClient(other.url, cache_dir=cache) as other_service:
        other_service.fetch_for_quote(quote)  # entries are keyed by base URL too
        assert other_service.requests == 4
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    entries = sorted(cache.iterdir())
    assert len(entries) == 8  # one file per response: 4 per service
    for entry in entries:
        assert stat.S_IMODE(entry.stat().st_mode) == 0o600
        doc = json.loads(entry.read_text())
        assert doc["url"].startswith((server.url, other.url)) and doc["fetched"] and doc["next_update"]
    assert not list(cache.glob(".*"))  # no temporary files left behind


def test_each_entry_is_refreshed_before_its_own_next_update_and_fails_closed(
    sim: tuple[SimulatedPlatform, bytes], tmp_path: Path
) -> None:
    platform, quote = sim
    t0 = datetime.now(UTC).replace(microsecond=0)
    current, older = platform.issue_collateral(t0), platform.issue_collateral(t0 - timedelta(days=20))
    # TCB info expires first (in 10 days); the CRLs and the QE identity in 30.
    mixed = replace(current, tcb_info=older.tcb_info, tcb_info_signature=older.tcb_info_signature)
    tcb_expires = TcbInfo.parse(older.tcb_info).next_update
    with serve(mixed) as server, PccsClient(server.url, cache_dir=tmp_path) as client:
        assert client.fetch_for_quote(quote, at=t0) == mixed
        assert server.total == 4
        assert client.fetch_for_quote(quote, at=tcb_expires - REFRESH_MARGIN - timedelta(minutes=1)) == mixed
        assert server.total == 4  # all fresh: from the cache

        server.collateral = newer = platform.issue_collateral(t0 + timedelta(days=5))
        fetched = client.fetch_for_quote(quote, at=tcb_expires - REFRESH_MARGIN / 2)
        assert server.total == 5 and server.requests[TCB] == 2  # only the TCB info was due
        assert fetched == replace(mixed, tcb_info=newer.tcb_info, tcb_info_signature=newer.tcb_info_signature)

        # A failing refresh while the cached response is still valid: the cached one is used...
        new_expiry = TcbInfo.parse(newer.tcb_info).next_update
        server.behaviour.status[TCB] = 503
        assert client.fetch_for_quote(quote, at=new_expiry - REFRESH_MARGIN / 2).tcb_info == newer.tcb_info
        # ... but once it has expired, never: the error is raised (fail closed).
        with pytest.raises(CollateralError, match=r"/sgx/certification/v4/tcb\?fmspc=.*HTTP 503"):
            client.fetch_for_quote(quote, at=new_expiry + timedelta(seconds=1))
        del server.behaviour.status[TCB]
        later = client.fetch_for_quote(quote, at=new_expiry + timedelta(seconds=1))
        assert later == newer  # everything had expired by then: all fetched again


def test_expired_collateral_is_fetched_every_time(tmp_path: Path) -> None:
    """A real vector's collateral expired long ago: it is fetched (the verifier judges it), never served from the cache."""
    quote, collateral, _, _ = vector("phala_sgx_v3")
    with serve(collateral) as server, PccsClient(server.url, cache_dir=tmp_path) as client:
        client.fetch_for_quote(quote)
        client.fetch_for_quote(quote)
        assert server.total == 8
        server.behaviour.status[QE] = 500
        with pytest.raises(CollateralError, match="HTTP 500"):
            client.fetch_for_quote(quote)


def test_unusable_cache_entries_are_fetched_again(sim: tuple[SimulatedPlatform, bytes], tmp_path: Path) -> None:
    platform, quote = sim
    with serve(platform.collateral()) as server, PccsClient(server.url, cache_dir=tmp_path) as client:
        client.fetch_for_quote(quote)
        files = {json.loads(p.read_text())["url"].split("/")[-1]: p for p in tmp_path.iterdir()}
        tcb_file = next(p for u, p in files.items() if u.startswith("tcb?"))
        qe_file = next(p for u, p in files.items() if u.startswith("identity?"))
        pck_file = next(p for u, p in files.items() if u.startswith("pckcrl?"))
        tcb_file.write_text('{"format": "fedattest-pccs-entry-v1", "body": 1}')  # corrupt
        doc = json.loads(qe_file.read_text())
        doc["url"] = doc["url"].replace("qe/identity", "qe/identity2")  # not the entry for this URL
        qe_file.write_text(json.dumps(doc))
        doc = json.loads(pck_file.read_text())
        doc["chain"] = None  # an entry without its issuer chain
        pck_file.write_text(json.dumps(doc))
        assert client.fetch_for_quote(quote) == platform.collateral()
        assert server.total == 4 + 3


def test_an_unwritable_cache_is_an_error(sim: tuple[SimulatedPlatform, bytes], tmp_path: Path) -> None:
    platform, quote = sim
    blocker = tmp_path / "file"
    blocker.write_text("")
    with (
        serve(platform.collateral()) as server,
        PccsClient(server.url, cache_dir=blocker / "cache") as client,
        pytest.raises(CollateralError, match="cannot write the PCCS cache"),
    ):
        client.fetch_for_quote(quote)


# -- failures ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"), [(TCB, 404), (QE, 500), (PCKCRL, 403), (ROOTCRL, 503)], ids=["tcb", "qe", "pckcrl", "rootcacrl"]
)
def test_http_errors_name_the_url(sim: tuple[SimulatedPlatform, bytes], path: str, status: int) -> None:
    platform, quote = sim
    with serve(platform.collateral()) as server, PccsClient(server.url) as client:
        server.behaviour.status[path] = status
        with pytest.raises(CollateralError, match=f"HTTP {status}") as err:
            client.fetch_for_quote(quote)
    assert f"{server.url}{path}" in str(err.value)


@pytest.mark.parametrize(
    ("path", "header"),
    [(TCB, "TCB-Info-Issuer-Chain"), (QE, "SGX-Enclave-Identity-Issuer-Chain"), (PCKCRL, "SGX-PCK-CRL-Issuer-Chain")],
    ids=["tcb", "qe", "pckcrl"],
)
def test_missing_issuer_chain_header(sim: tuple[SimulatedPlatform, bytes], path: str, header: str) -> None:
    platform, quote = sim
    with serve(platform.collateral()) as server, PccsClient(server.url) as client:
        server.behaviour.drop_header.add(path)
        with pytest.raises(CollateralError, match=f"has no {header} header") as err:
            client.fetch_for_quote(quote)
    assert f"{server.url}{path}" in str(err.value)


def test_bad_issuer_chain_header(sim: tuple[SimulatedPlatform, bytes]) -> None:
    platform, quote = sim
    collateral = replace(platform.collateral(), tcb_info_issuer_chain="-----BEGIN CERTIFICATE-----\nnope\n")
    with (
        serve(collateral) as server,
        PccsClient(server.url) as client,
        pytest.raises(CollateralError, match="TCB-Info-Issuer-Chain header is not a URL-encoded PEM"),
    ):
        client.fetch_for_quote(quote)


@pytest.mark.parametrize(
    ("path", "edit", "needle"),
    [
        (TCB, lambda b: b[:-5], "TCB info response is not valid JSON"),
        (TCB, lambda b: b + b"[]", "data after the JSON object"),
        (TCB, lambda b: b"", "not valid JSON"),
        (TCB, lambda b: b.replace(b'"nextUpdate"', b'"nextUpdat"'), "TCB info nextUpdate is missing"),
        (TCB, lambda b: b.replace(b'"nextUpdate":"', b'"nextUpdate":"x'), "not an ISO 8601 time"),
        (QE, lambda b: b.replace(b'"signature"', b'"sig"'), "'signature'"),
        (QE, lambda b: b.replace(b'"signature":"', b'"signature":"zz'), "QE identity signature is not hex"),
        (TCB, lambda b: b"\xff" + b, "not UTF-8"),
        (PCKCRL, lambda b: b"not a crl", "PCK CRL is neither DER, PEM nor hex"),
        (PCKCRL, lambda b: b[:-10], "PCK CRL is not a valid DER CRL"),
        (ROOTCRL, lambda b: b"zz", "root CA CRL is neither DER, PEM nor hex"),
        (ROOTCRL, lambda b: b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", "not a valid PEM CRL"),
    ],
    ids=[
        "truncated", "trailing", "empty", "no-next-update", "bad-next-update", "no-signature", "bad-hex", "not-utf8",
        "garbage-pck-crl", "truncated-pck-crl", "garbage-root-crl", "bad-pem-root-crl",
    ],
)  # fmt: skip
def test_malformed_bodies_are_collateral_errors(
    sim: tuple[SimulatedPlatform, bytes], path: str, edit: Callable[[bytes], bytes], needle: str
) -> None:
    platform, quote = sim
    with serve(platform.collateral()) as server, PccsClient(server.url) as client:
        server.behaviour.edit_body[path] = edit
        with pytest.raises(CollateralError, match=re.escape(needle)) as err:
            client.fetch_for_quote(quote)
    assert f"{server.url}{path}" in str(err.value)


def test_an_oversized_response_is_refused(sim: tuple[SimulatedPlatform, bytes]) -> None:
    platform, quote = sim
    with serve(platform.collateral()) as server, PccsClient(server.url) as client:
        server.behaviour.edit_body[TCB] = lambda b: b + b" " * MAX_RESPONSE_BYTES
        with pytest.raises(CollateralError, match=r"/tcb\?fmspc=\w+: response larger than 4 MiB"):
            client.fetch_for_quote(quote)


def test_nothing_malformed_is_cached(sim: tuple[SimulatedPlatform, bytes], tmp_path: Path) -> None:
    platform, quote = sim
    with serve(platform.collateral()) as server, PccsClient(server.url, cache_dir=tmp_path) as client:
        server.behaviour.edit_body[TCB] = lambda b: b[:-1]
        with pytest.raises(CollateralError):
            client.fetch_for_quote(quote)
        del server.behaviour.edit_body[TCB]
        assert client.fetch_for_quote(quote) == platform.collateral()
        assert server.requests[TCB] == 2 and server.requests[PCKCRL] == 1


def test_connection_refused_is_a_collateral_error(sim: tuple[SimulatedPlatform, bytes]) -> None:
    platform, quote = sim
    server = PccsServer(platform.collateral())
    url = server.url
    server.stop()  # bound, never served, now closed
    with PccsClient(url, timeout=2) as client, pytest.raises(CollateralError, match="ConnectError") as err:
        client.fetch_for_quote(quote)
    assert f"{url}/sgx/certification/v4/pckcrl" in str(err.value)


def test_a_slow_server_times_out(sim: tuple[SimulatedPlatform, bytes]) -> None:
    platform, quote = sim
    with serve(platform.collateral()) as server, PccsClient(server.url, timeout=0.1) as client:
        server.behaviour.delay = 0.5
        with pytest.raises(CollateralError, match=r"no response within 0.1 s"):
            client.fetch_for_quote(quote)


def test_a_quote_without_a_usable_pck_certificate(sim: tuple[SimulatedPlatform, bytes]) -> None:
    platform, quote = sim
    q = Quote.parse(quote)
    cert = replace(q.signature.qe.certification_data, data=pem(platform.root_ca).encode())  # no SGX extension
    broken = replace(q, signature=replace(q.signature, qe=replace(q.signature.qe, certification_data=cert)))
    with PccsClient("http://127.0.0.1:1") as client, pytest.raises(CollateralError, match="cannot read the FMSPC"):
        client.fetch_for_quote(broken)


# -- TLS and Intel's PCS ---------------------------------------------------------------------------------


def test_https_with_a_pinned_ca(sim: tuple[SimulatedPlatform, bytes], tls: tuple[Path, Path], tmp_path: Path) -> None:
    platform, quote = sim
    cert, _ = tls
    with serve(platform.collateral(), tls=tls) as server:
        assert server.url.startswith("https://")
        with PccsClient(server.url, verify=str(cert)) as client:
            assert client.fetch_for_quote(quote) == platform.collateral()
        with PccsClient(server.url) as system_cas, pytest.raises(CollateralError, match=r"CERTIFICATE_VERIFY_FAILED.*--pccs-ca"):
            system_cas.fetch_for_quote(quote)
    with pytest.raises(CollateralError, match="cannot be turned off"):
        PccsClient("https://127.0.0.1:1", verify=False)
    with pytest.raises(CollateralError, match="cannot load the PCCS CA bundle"):
        PccsClient("https://127.0.0.1:1", verify=str(tmp_path / "missing.pem"))


def _pcs_collateral(crl_url: str, now: datetime) -> tuple[Collateral, bytes]:
    """Collateral under a fresh root whose certificate names ``crl_url``, and the root CRL."""
    root_key, signer_key = new_key(), new_key()
    org = "pcs fallback test"
    root = issue_certificate(
        subject=name("Root", org), public_key=root_key.public_key(), issuer=None, issuer_key=root_key,
        not_before=now - timedelta(days=1), not_after=now + timedelta(days=9), ca=True, crl_url=crl_url,
    )  # fmt: skip
    signer = issue_certificate(
        subject=name("Signer", org), public_key=signer_key.public_key(), issuer=root, issuer_key=root_key,
        not_before=now - timedelta(days=1), not_after=now + timedelta(days=9), ca=False,
    )  # fmt: skip
    crl = issue_crl(issuer=root, issuer_key=root_key, revoked_serials=[], this_update=now, next_update=now + timedelta(days=1))
    until = (now + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    collateral = Collateral(
        pck_crl_issuer_chain=pem(signer, root), root_ca_crl=crl, pck_crl=crl,
        tcb_info_issuer_chain=pem(signer, root), tcb_info=f'{{"fmspc":"00906ED50000","nextUpdate":"{until}"}}',
        tcb_info_signature=bytes(64), qe_identity_issuer_chain=pem(signer, root),
        qe_identity=f'{{"nextUpdate":"{until}"}}', qe_identity_signature=bytes(64),
    )  # fmt: skip
    return collateral, crl


def test_intel_pcs_root_crl_comes_from_the_crl_distribution_point(tls: tuple[Path, Path], tmp_path: Path) -> None:
    """Intel's PCS has no rootcacrl path (404): the root certificate's https CRL distribution point is used."""
    platform = Platform("sgx", "00906ED50000", "processor")
    now = datetime.now(UTC)
    server = PccsServer(Collateral("", b"", b"", "", "", b"", "", "", b""), tls=tls).start()
    try:
        server.collateral, crl = _pcs_collateral(f"{server.url}/IntelSGXRootCA.der", now)
        server.behaviour.pcs = True
        server.behaviour.extra["/IntelSGXRootCA.der"] = crl
        with PccsClient(server.url, verify=str(tls[0]), cache_dir=tmp_path) as client:
            assert client.fetch_for_platform(platform) == server.collateral
            assert server.requests[ROOTCRL] == 1 and server.requests["/IntelSGXRootCA.der"] == 1
            client.fetch_for_platform(platform)  # cached; only the rootcacrl probe goes out again
            assert server.requests[ROOTCRL] == 2 and server.total == 6
            server.behaviour.status["/IntelSGXRootCA.der"] = 500
            uncached = PccsClient(server.url, verify=str(tls[0]))
            with uncached, pytest.raises(CollateralError, match=r"IntelSGXRootCA\.der: HTTP 500"):
                uncached.fetch_for_platform(platform)
    finally:
        server.stop()
    plain, _ = _pcs_collateral("http://crl.example/root.der", now)
    with pytest.raises(CollateralError, match=r"no https:// CRL distribution point .*http://crl.example/root.der"):
        root_crl_url(plain.qe_identity_issuer_chain)


# -- pure helpers --------------------------------------------------------------------------------------------


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
        PccsClient(url)


def test_signed_member_edge_cases() -> None:
    until = '"nextUpdate":"2030-01-01T00:00:00Z"'
    got = signed_member(f'{{"a":{{{until}}},"signature":"00ff"}}', "a", "t")
    assert (got.text, got.signature, got.next_update) == (f"{{{until}}}", b"\x00\xff", datetime(2030, 1, 1, tzinfo=UTC))
    cases: list[tuple[str, str]] = [
        ('{"a":{},"a":{},"signature":""}', "duplicate"),
        ('["a"]', "not a JSON object"),
        ('{"a":[],"signature":""}', "'a' (an object)"),
        ('{"a":{} "signature":""}', "expected ','"),
        ('{"a" {}}', "expected ':'"),
        ('{"a":{},"signature":"",}', "trailing ','"),
        ('{"a":{},"signature":""}', "t nextUpdate is missing"),
        ('{"a":{"nextUpdate":"2030-01-01T00:00:00"},"signature":""}', "has no time zone"),
        ("[" * 100_000, "not a JSON object"),
        ('{"a":' + "[" * 100_000, "not valid JSON"),
    ]
    for body, needle in cases:
        with pytest.raises(CollateralError, match=re.escape(needle)):
            signed_member(body, "a", "t")


def test_crl_and_chain_encodings(sim: tuple[SimulatedPlatform, bytes]) -> None:
    collateral = sim[0].collateral()
    der = collateral.pck_crl
    pem_text = x509.load_der_x509_crl(der).public_bytes(Encoding.PEM)
    assert crl_der(der, "c") == crl_der(der.hex().encode(), "c") == crl_der(b" " + pem_text, "c") == der
    chain = collateral.tcb_info_issuer_chain
    assert decode_chain(chain.replace("\n", "%0A").replace("+", "%2B"), "h") == chain
    assert decode_chain(chain, "h") == chain  # not encoded at all: still PEM
    with pytest.raises(CollateralError, match="h is not a URL-encoded PEM"):
        decode_chain("%FF%FE", "h")


# -- the command line ------------------------------------------------------------------------------------------


def _verify(*args: str | Path) -> tuple[int, dict[str, Any], str]:
    result = runner.invoke(app, ["quote", "verify", *map(str, args), "--json"])
    return result.exit_code, json.loads(result.stdout), result.stderr


def test_cli_verifies_with_collateral_from_a_pccs(
    sim: tuple[SimulatedPlatform, bytes], tls: tuple[Path, Path], tmp_path: Path
) -> None:
    platform, quote = sim
    quote_file, root = tmp_path / "q.bin", tmp_path / "root.der"
    quote_file.write_bytes(quote)
    root.write_bytes(platform.root_ca_der)
    cert = tls[0]
    cache = tmp_path / "cache"
    with serve(platform.collateral(), tls=tls) as server:
        common: list[str | Path] = [quote_file, "--pccs", server.url, "--pccs-ca", cert, "--cache-dir", cache, "--root-ca", root]
        code, out, err = _verify(*common, "--allow-simulation")
        assert (code, out["accepted"], err) == (0, True, ""), out
        assert server.total == 4
        code, out, _ = _verify(*common, "--allow-simulation")
        assert (code, out["accepted"]) == (0, True) and server.total == 4  # from the cache
        code, out, _ = _verify(*common)  # fetched fine, but simulated evidence is not allowed
        assert (code, out["accepted"], out["step"]) == (1, False, "appraisal")

        text = runner.invoke(app, ["quote", "verify", *map(str, common), "--allow-simulation"])
        assert text.exit_code == 0 and text.stdout.splitlines()[-1].startswith("ACCEPTED")

        server.behaviour.status[TCB] = 500
        code, out, _ = _verify(quote_file, "--pccs", server.url, "--pccs-ca", cert, "--cache-dir", tmp_path / "fresh")
        assert (code, out["accepted"], out["step"]) == (1, False, "collateral")
        assert f"{server.url}{TCB}" in out["reason"] and "HTTP 500" in out["reason"]

        code, out, _ = _verify(quote_file, "--pccs", server.url, "--cache-dir", tmp_path / "untrusted")
        assert (code, out["step"]) == (1, "collateral") and "CERTIFICATE_VERIFY_FAILED" in out["reason"]
    missing = runner.invoke(app, ["quote", "verify", str(quote_file), "--pccs", "https://127.0.0.1:1", "--pccs-ca", "nope.pem"])
    assert missing.exit_code == 2 and "--pccs-ca" in missing.stderr


@pytest.mark.parametrize("case", ["phala_sgx_v3", "phala_tdx_v5_outdated"])
def test_cli_gives_the_same_verdict_with_a_pccs_as_with_the_file(case: str, tmp_path: Path) -> None:
    _, collateral, at, _ = vector(case)
    quote_file = DCAP / f"{case}.quote"
    extra = ["--at", str(at), "--accept-tcb", "ConfigurationAndSWHardeningNeeded"]
    with serve(collateral) as server:
        via_pccs = _verify(quote_file, "--pccs", server.url, "--cache-dir", tmp_path, *extra)
    via_file = _verify(quote_file, "--collateral", DCAP / f"{case}.collateral.json", *extra)
    assert via_pccs[0] == via_file[0] == (0 if dcap_expected()[case]["accepted"] else 1)
    for key in ("accepted", "step", "reason", "tcb_status"):
        assert via_pccs[1].get(key) == via_file[1].get(key), key
