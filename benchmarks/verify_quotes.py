"""Quote verification throughput: fedattest's verifier (cold and warm) against dcap-qvl, in one run.

    python benchmarks/verify_quotes.py [--vector NAME ...] [-n N] [--repeat R] [--threads T] [--json]

Modes (quotes per second, median of --repeat runs after a warm-up):
  dcap-qvl        the reference verifier (Rust, PyPI dcap-qvl), same quote, collateral and time;
  signatures-only the floor of any verifier built on Python and OpenSSL: only the nine P-256 ECDSA
                  verifications a cold verification makes (root CA CRL, PCK CA certificate, PCK
                  certificate, PCK CRL, TCB signing certificate, TCB info, QE identity, QE report,
                  quote), done bare with cryptography on keys, signatures and signed bytes loaded
                  beforehand: no parsing, no other check;
  cold            a new fedattest QuoteVerifier per quote: every certificate, CRL, TCB info and QE
                  identity check is done for every quote;
  warm            one QuoteVerifier, one collateral bundle: collateral and certification-data checks
                  are cached by content hash, the quote signature and TCB evaluation run every time;
  warm-threads    the warm verifier shared by --threads threads (OpenSSL releases the GIL in ECDSA);
and, for the "simulated" vector, distinct quotes (different report data, fresh signatures) from one
simulated platform, which is what a coordinator sees: N enclaves on known platforms.
Ratios are against dcap-qvl measured in the same run on the same inputs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from fedattest.dcap.collateral import Collateral  # noqa: E402
from fedattest.dcap.trust import load_trust_root  # noqa: E402
from fedattest.dcap.verify import QuoteVerifier  # noqa: E402
from fedattest.sgx.quote import Quote  # noqa: E402
from fedattest.tee import SimulatedPlatform, WorkloadIdentity  # noqa: E402

try:
    import dcap_qvl
except ImportError:  # pragma: no cover - dcap-qvl is a dev dependency
    dcap_qvl = None

DEFAULT_VECTORS = ("phala_sgx_v3", "phala_tdx_v4", "simulated")
SIMULATED = "simulated"


@dataclass
class Case:
    name: str
    quotes: list[bytes]  # one quote repeated, or distinct quotes
    collateral: Collateral
    at: int
    root_der: bytes | None  # None: Intel's root


@dataclass
class Row:
    vector: str
    mode: str
    quotes_per_second: float
    us_per_quote: float
    ratio_vs_dcap_qvl: float | None


def load_case(vectors: Path, name: str, n: int, workdir: Path) -> Case:
    if name == SIMULATED:
        platform = SimulatedPlatform.create(workdir / "platform")
        tee = platform.tee(WorkloadIdentity(sha256(b"bench enclave").digest(), sha256(b"bench signer").digest()))
        quotes = [tee.quote(sha256(i.to_bytes(8, "little")).digest() * 2) for i in range(n)]
        now = int(datetime.now(UTC).timestamp())
        return Case(name, quotes, platform.collateral(), now, platform.root_ca_der)
    expected = json.loads((vectors / "expected.json").read_text())
    case = expected.get(name)
    if case is None or "at" not in case:
        known = ", ".join(sorted(k for k, v in expected.items() if "at" in v))
        raise SystemExit(f"error: unknown or unverifiable vector {name!r}; choose from {known}, {SIMULATED}")
    quote = (vectors / f"{name}.quote").read_bytes()
    collateral = Collateral.from_json((vectors / f"{name}.collateral.json").read_text())
    root = (vectors / case["root_ca"]).read_bytes() if "root_ca" in case else None
    return Case(name, [quote] * n, collateral, int(case["at"]), root)


def rate(run: Callable[[], None], count: int, repeat: int) -> float:
    """Quotes per second: median over ``repeat`` timed runs of ``count`` quotes, after one warm-up run."""
    run()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        samples.append(count / (time.perf_counter() - start))
    return statistics.median(samples)


# (public key, DER ECDSA signature, signed bytes)
SignatureCheck = tuple[ec.EllipticCurvePublicKey, bytes, bytes]
ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def _p256_key(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def _der_signature(raw: bytes) -> bytes:
    """A quote's or collateral's raw r||s signature as DER, as OpenSSL takes it."""
    return utils.encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))


def signature_checks(case: Case) -> list[list[SignatureCheck]]:
    """For each quote, the nine signature checks a cold verification makes, with everything loaded
    beforehand (keys, DER signatures, the signed bytes of each certificate and CRL). The warm-up run of
    the mode verifies them all, so a wrong pairing fails loudly instead of timing an exception."""
    c = case.collateral
    tcb_signer, root = x509.load_pem_x509_certificates(c.tcb_info_issuer_chain.encode())
    pck_crl_signer = x509.load_pem_x509_certificates(c.pck_crl_issuer_chain.encode())[0]
    root_crl, pck_crl = x509.load_der_x509_crl(c.root_ca_crl), x509.load_der_x509_crl(c.pck_crl)
    root_key, tcb_key = _p256_key(root), _p256_key(tcb_signer)
    collateral_checks = [
        (root_key, root_crl.signature, root_crl.tbs_certlist_bytes),
        (_p256_key(pck_crl_signer), pck_crl.signature, pck_crl.tbs_certlist_bytes),
        (root_key, tcb_signer.signature, tcb_signer.tbs_certificate_bytes),
        (tcb_key, _der_signature(c.tcb_info_signature), c.tcb_info.encode()),
        (tcb_key, _der_signature(c.qe_identity_signature), c.qe_identity.encode()),
    ]
    per_quote: dict[bytes, list[SignatureCheck]] = {}
    for raw in case.quotes:
        if raw in per_quote:
            continue
        q = Quote.parse(raw)
        leaf, ca = x509.load_pem_x509_certificates(q.pck_chain_pem)[:2]
        attestation_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + q.signature.attestation_key)
        qe = q.signature.qe
        per_quote[raw] = [
            *collateral_checks,
            (_p256_key(root), ca.signature, ca.tbs_certificate_bytes),
            (_p256_key(ca), leaf.signature, leaf.tbs_certificate_bytes),
            (_p256_key(leaf), _der_signature(qe.qe_report_signature), qe.qe_report.to_bytes()),
            (attestation_key, _der_signature(q.signature.quote_signature), q.signed_bytes()),
        ]
    return [per_quote[raw] for raw in case.quotes]


def modes(case: Case, threads: int) -> dict[str, Callable[[], None]]:
    quotes, collateral, at = case.quotes, case.collateral, case.at
    root = load_trust_root(case.root_der) if case.root_der else None
    out: dict[str, Callable[[], None]] = {}
    if dcap_qvl is not None:
        qvl_collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral.to_json())
        if case.root_der is None:
            out["dcap-qvl"] = lambda: [dcap_qvl.verify(q, qvl_collateral, at) for q in quotes] and None
        else:
            root_der = case.root_der
            out["dcap-qvl"] = lambda: [dcap_qvl.verify_with_root_ca(q, qvl_collateral, root_der, at) for q in quotes] and None

    checks = signature_checks(case)

    def signatures_only() -> None:
        for quote_checks in checks:
            for key, signature, data in quote_checks:
                key.verify(signature, data, ECDSA_SHA256)

    out["signatures-only"] = signatures_only

    def cold() -> None:
        for q in quotes:
            QuoteVerifier(root).verify(q, collateral, at=at)

    warm_verifier = QuoteVerifier(root)

    def warm() -> None:
        for q in quotes:
            warm_verifier.verify(q, collateral, at=at)

    out["cold"] = cold
    out["warm"] = warm
    if threads > 1:
        shares = [quotes[i::threads] for i in range(threads)]

        def warm_threads() -> None:
            def work(part: Sequence[bytes]) -> None:
                for q in part:
                    warm_verifier.verify(q, collateral, at=at)

            workers = [threading.Thread(target=work, args=(part,)) for part in shares]
            for w in workers:
                w.start()
            for w in workers:
                w.join()

        out[f"warm-{threads}-threads"] = warm_threads
    return out


def measure(case: Case, repeat: int, threads: int) -> list[Row]:
    rates = {mode: rate(run, len(case.quotes), repeat) for mode, run in modes(case, threads).items()}
    base = rates.get("dcap-qvl")
    return [
        Row(case.name, mode, r, 1e6 / r, None if base is None or mode == "dcap-qvl" else r / base) for mode, r in rates.items()
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="Example: python benchmarks/verify_quotes.py -n 500 --vector phala_sgx_v3"
    )
    parser.add_argument("--vector", action="append", help=f"test vector name or '{SIMULATED}' (repeatable)")
    parser.add_argument("-n", type=int, default=300, help="quotes per timed run (default 300)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per mode; the median is reported (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="threads for the warm-threads mode; 1 skips it (default 2)")
    parser.add_argument("--vectors", type=Path, default=REPO / "tests" / "vectors" / "dcap")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    if args.n < 1 or args.repeat < 1 or args.threads < 1:
        parser.error("-n, --repeat and --threads must be at least 1")
    names = args.vector or list(DEFAULT_VECTORS)
    if any(name != SIMULATED for name in names) and not (args.vectors / "expected.json").is_file():
        parser.error(f"no test vectors at {args.vectors} (the checkout is incomplete, or pass --vectors)")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rows += measure(load_case(args.vectors, name, args.n, Path(tmp)), args.repeat, args.threads)
    if args.json:
        report: dict[str, Any] = {"n": args.n, "repeat": args.repeat, "dcap_qvl": dcap_qvl is not None}
        report["results"] = [asdict(r) for r in rows]
        print(json.dumps(report, indent=2))
        return 0
    table = Table(title=f"quote verification, {args.n} quotes per run, median of {args.repeat}")
    for column in ("vector", "mode", "quotes/s", "µs/quote", "vs dcap-qvl"):
        table.add_column(column, justify="left" if column in ("vector", "mode") else "right")
    for r in rows:
        ratio = "baseline" if r.mode == "dcap-qvl" else ("n/a" if r.ratio_vs_dcap_qvl is None else f"{r.ratio_vs_dcap_qvl:.2f}x")
        table.add_row(r.vector, r.mode, f"{r.quotes_per_second:,.0f}", f"{r.us_per_quote:,.0f}", ratio)
    console = Console()
    console.print(table)
    if dcap_qvl is None:
        console.print("dcap-qvl is not installed (pip install -e '.[dev]'): ratios are n/a")
    return 0


if __name__ == "__main__":
    sys.exit(main())
