"""The shipped hardware vectors are the published bytes: every file is listed in tests/vectors/README.md
with its SHA-256, and nothing unlisted sits beside them."""

from __future__ import annotations

import hashlib
import json
import re

from tests.conftest import VECTORS

_SUM_LINE = re.compile(r"^([0-9a-f]{64})  (\S+)$", re.MULTILINE)


def _listed() -> dict[str, str]:
    return {path: digest for digest, path in _SUM_LINE.findall((VECTORS / "README.md").read_text())}


def test_every_vector_matches_its_published_sum() -> None:
    listed = _listed()
    assert listed, "tests/vectors/README.md lists no sums"
    for path, digest in listed.items():
        assert hashlib.sha256((VECTORS / path).read_bytes()).hexdigest() == digest, f"{path} differs from its recorded SHA-256"


def test_no_unlisted_file_among_the_vectors() -> None:
    present = {p.relative_to(VECTORS).as_posix() for p in VECTORS.rglob("*") if p.is_file() and p.name != "README.md"}
    assert present == set(_listed())


def test_the_trust_anchor_is_the_one_the_verifier_embeds() -> None:
    from fedattest.dcap.trust import INTEL_SGX_ROOT_CA_SHA256

    assert _listed()["dcap/intel_sgx_root_ca.der"] == INTEL_SGX_ROOT_CA_SHA256


def test_the_case_tables_match_the_vectors() -> None:
    from tests.conftest import DCAP, QUOTE_CASES, VERIFIABLE_CASES, dcap_expected

    expected = dcap_expected()
    assert set(QUOTE_CASES) == set(expected) == {p.stem for p in DCAP.glob("*.quote")}
    assert set(VERIFIABLE_CASES) == {name for name, case in expected.items() if "at" in case}
    assert set(VERIFIABLE_CASES) == {p.name.removesuffix(".collateral.json") for p in DCAP.glob("*.collateral.json")}


def test_the_policy_hash_vector() -> None:
    """The canonical form is RFC 8785 and the hash is SHA-256 over the v2 label and it: what another language
    reproduces from the canonical bytes alone."""
    import rfc8785

    from fedattest.policy.federation import POLICY_HASH_LABEL, parse_policy

    folder = VECTORS / "policy"
    canonical = (folder / "canonical.json").read_bytes()
    policy = parse_policy((folder / "policy.toml").read_text())
    assert policy.canonical_bytes() == canonical
    assert rfc8785.dumps(json.loads(canonical)) == canonical  # already in JCS form
    assert hashlib.sha256(POLICY_HASH_LABEL + canonical).hexdigest() == (folder / "policy_hash.txt").read_text().strip()
    assert policy.policy_hash().hex() == (folder / "policy_hash.txt").read_text().strip()
    assert POLICY_HASH_LABEL == b"fedattest-policy-v2\n" and b'"target_delta":0.00001' in canonical
