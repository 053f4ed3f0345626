"""Talking to the coordinator from a member: verify it once and pin its root CA, then activate.

First contact cannot rely on a CA: the coordinator's TLS certificate is issued by its own root, which
the member does not know yet. So the member pins the certificate the server presents (trust on first
use, TLS still fully verified against that pin), fetches a quote over that connection for a fresh
nonce, and accepts the root CA only if the quote is genuine, matches the policy's coordinator
reference values, binds SHA-256(root CA key || policy hash || nonce), and the pinned TLS certificate
was issued by that root. From then on every connection verifies TLS against the pinned root only.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import secrets
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from fedattest.attestation import REPORT_DATA, attest
from fedattest.dcap.collateral import Collateral
from fedattest.dcap.result import VerifiedQuote
from fedattest.dcap.verify import QuoteVerifier
from fedattest.errors import FedattestError
from fedattest.files import PRIVATE_DIR, atomic_write
from fedattest.pki import identity as ident
from fedattest.pki.crl import RevocationList
from fedattest.policy.appraisal import ReferenceValues, Verdict
from fedattest.policy.federation import FederationPolicy
from fedattest.sgx.quote import Quote
from fedattest.tee.base import TEE
from fedattest.tee.sealing import seal, unseal

log = logging.getLogger("fedattest.participant")

SEALED_NAME = "identity.sealed"
SEAL_PURPOSE = b"fedattest-participant-identity-v1"


class CoordinatorError(FedattestError):
    """The coordinator could not be verified or refused a request; the message says why. ``status`` is the HTTP
    status of a refusal (None when there was no answer to read one from)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class CoordinatorUnreachableError(CoordinatorError):
    """The coordinator could not be reached (connection, TLS or timeout), as opposed to answering a refusal."""


def _host_port(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise CoordinatorError(f"the coordinator URL must be https://HOST:PORT, got {url!r}")
    return parts.hostname, parts.port or 443


def _pinned_context(cadata: str, *, leaf_pin: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=cadata)
    if leaf_pin:
        # Trust exactly this certificate although it is not a CA: the pin, not a chain, is the anchor.
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def coordinator_context(root_ca_pem: str) -> ssl.SSLContext:
    """TLS to the coordinator (or any member it certified) trusting only its pinned root CA."""
    return _pinned_context(root_ca_pem, leaf_pin=False)


def coordinator_answer(response: httpx.Response, what: str) -> Any:
    """The JSON of a coordinator's 200 answer; otherwise :class:`CoordinatorError` ``WHAT: HTTP N: reason`` (the
    reason from its ``{"error": ...}`` body, or the body as it is when that is not JSON)."""
    if response.status_code != 200:
        try:
            detail = response.json().get("error", response.text)
        except ValueError:
            detail = response.text
        raise CoordinatorError(f"{what}: HTTP {response.status_code}: {detail}", response.status_code)
    return response.json()


def verify_coordinator(
    url: str,
    policy: FederationPolicy,
    *,
    verifier: QuoteVerifier,
    collateral_for: Callable[[Quote], Collateral],
    expect_mrenclave: bytes | None = None,
    timeout: float = 30.0,
) -> tuple[x509.Certificate, VerifiedQuote, Verdict]:
    """Verify the coordinator at ``url`` against ``policy``; returns its root CA (to pin), the verified
    quote and the appraisal verdict. Raises :class:`CoordinatorError` with the reason otherwise."""
    host, port = _host_port(url)
    try:
        leaf_pem = ssl.get_server_certificate((host, port), timeout=timeout)
    except OSError as exc:
        raise CoordinatorError(f"cannot reach {url}: {exc}") from None
    nonce = secrets.token_bytes(32)
    try:
        with httpx.Client(verify=_pinned_context(leaf_pem, leaf_pin=True), timeout=timeout) as http:
            body = coordinator_answer(http.get(f"{url}/api/v1/quote", params={"nonce": nonce.hex()}), "GET /api/v1/quote")
    except httpx.HTTPError as exc:
        raise CoordinatorError(f"{url}: {exc}") from None
    try:
        raw = base64.b64decode(body["quote"], validate=True)
        root = x509.load_pem_x509_certificate(body["root_ca"].encode())
    except (KeyError, ValueError, TypeError) as exc:
        raise CoordinatorError(f"malformed quote response: {exc}") from None
    reference = policy.coordinator
    if expect_mrenclave is not None:
        reference = ReferenceValues.model_validate(
            {**reference.model_dump(), "mrenclave": [expect_mrenclave], "mrsigner": None, "isv_prod_id": None}
        )
    root_der = root.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    outcome = attest(raw, collateral=collateral_for, verifier=verifier, reference=reference,
                     expected_report_data=ident.coordinator_report_data(root_der, policy.policy_hash(), nonce))  # fmt: skip
    if outcome.evidence_failed:
        raise CoordinatorError(f"the coordinator's quote does not verify: {outcome.reason}")
    if outcome.step == REPORT_DATA:
        raise CoordinatorError(
            "the coordinator's quote does not bind this root CA, this policy and our nonce (another policy version, or a relay)"
        )
    if not outcome.accepted:
        raise CoordinatorError(f"the coordinator is not the approved enclave: {outcome.reason}")
    verified, verdict = outcome.verified, outcome.verdict
    assert verified is not None and verdict is not None
    leaf = x509.load_pem_x509_certificate(leaf_pem.encode())
    try:
        leaf.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CoordinatorError(f"the coordinator's TLS certificate was not issued by its attested root CA: {exc}") from None
    return root, verified, verdict


def submit_policy(url: str, root_ca_pem: str, policy_text: str, approvals: list[str], *, timeout: float = 60.0) -> Any:
    """``POST /api/v1/policy``: ask the coordinator (TLS pinned to its root) to put a new policy version in force.
    It needs enough approvals of the new version by the current policy's approvers and by its own; the answer
    is ``{version, policy_hash, revoked: [{member, cert_sha256, reason}]}``. Raises :class:`CoordinatorError`."""
    _host_port(url)
    try:
        with httpx.Client(verify=coordinator_context(root_ca_pem), timeout=timeout) as http:
            body = {"policy": policy_text, "approvals": approvals}
            return coordinator_answer(http.post(f"{url}/api/v1/policy", json=body), "POST /api/v1/policy")
    except httpx.HTTPError as exc:
        raise CoordinatorError(f"{url}: {exc}") from None


@dataclass(frozen=True)
class Activation:
    directory: Path
    certificate_chain: str
    token: str
    provisioned: dict[str, Any]


def activate(
    url: str,
    root_ca_pem: str,
    member: str,
    tee: TEE,
    out_dir: Path,
    *,
    enrolment_key: ed25519.Ed25519PrivateKey,
    extra_keys: dict[str, ec.EllipticCurvePublicKey] | None = None,
    timeout: float = 30.0,
    live: bool = False,
) -> Activation:
    """Inside the TEE: new key, claims bound into a quote, activation; writes key.pem, chain.pem, token.jwt
    and provisioned.json into ``out_dir`` (0700, files 0600). ``extra_keys`` (e.g. ``{"node": ...}``, the
    Flower node key) are bound in the quoted claims too, and the coordinator publishes them.

    ``enrolment_key`` is the member's own key (the one the policy lists as its ``enrolment_key``): it signs
    the claims, which is what lets this enclave, and no other, activate as ``member``.

    ``live``: the caller will run this identity and send :func:`heartbeat` s, so it counts as the member's running
    identity from the activation on. The coordinator refuses (409, naming it) to activate a member while another of
    its identities is running."""
    _host_port(url)
    context = _pinned_context(root_ca_pem, leaf_pin=False)
    key = ident.new_key()
    try:
        with httpx.Client(verify=context, timeout=timeout) as http:
            policy_hash = coordinator_answer(http.get(f"{url}/api/v1/policy"), "GET /api/v1/policy")["policy_hash"]
            extra = extra_keys or {}
            claims = _fresh_claims(http, url, member, policy_hash, key.public_key(), extra)
            quote = tee.quote(ident.claims_report_data(claims))
            spki = serialization.PublicFormat.SubjectPublicKeyInfo
            pems = {n: k.public_bytes(serialization.Encoding.PEM, spki).decode() for n, k in extra.items()}
            request = {
                "member": member,
                "quote": base64.b64encode(quote).decode(),
                "csr": ident.make_csr(key, member),
                "claims": claims,
                "public_keys": pems,
                "enrolment": ident.sign_enrolment(enrolment_key, claims),
                **({"live": True} if live else {}),
            }
            result = coordinator_answer(http.post(f"{url}/api/v1/activate", json=request), "POST /api/v1/activate")
    except httpx.HTTPError as exc:
        raise CoordinatorError(f"{url}: {exc}") from None
    fmt = serialization.PrivateFormat.PKCS8
    pem_key = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()
    return _write_identity(out_dir, tee, pem_key, result["certificate_chain"], result["token"], result["provisioned"])


def _fresh_claims(  # noqa: PLR0917 - the claims' parts
    http: httpx.Client,
    url: str,
    member: str,
    policy_hash: str,
    key: ec.EllipticCurvePublicKey,
    extra: dict[str, ec.EllipticCurvePublicKey],
) -> dict[str, Any]:
    """Claims over a fresh coordinator nonce: the member, the policy hash and the SPKI hash of the identity key
    (``tls``) and of each extra key. What an activation and a re-provisioning both quote."""
    nonce = coordinator_answer(http.post(f"{url}/api/v1/nonce"), "POST /api/v1/nonce")["nonce"]
    keys = {"tls": ident.spki_sha256(key), **{name: ident.spki_sha256(k) for name, k in extra.items()}}
    return {"member": member, "nonce": nonce, "policy_hash": policy_hash, "keys": keys}


def _sealed_state(out_dir: Path, tee: TEE) -> dict[str, Any] | None:
    """What :func:`_write_identity` sealed in ``out_dir`` (key, chain, token, provisioned), or None."""
    path = out_dir / SEALED_NAME
    if not path.exists():
        return None
    state: dict[str, Any] = json.loads(unseal(tee.sealing_key(), SEAL_PURPOSE, path.read_bytes()))
    return state


def _write_identity(  # noqa: PLR0917 - the identity's parts
    out_dir: Path, tee: TEE, key_pem: str, chain: str, token: str, provisioned: dict[str, Any]
) -> Activation:
    """key.pem, chain.pem, token.jwt and provisioned.json in ``out_dir`` (0700, files 0600), and the same sealed
    to this enclave (what :func:`resume` reads)."""
    out_dir.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    os.chmod(out_dir, PRIVATE_DIR)
    atomic_write(out_dir / "key.pem", key_pem.encode())
    atomic_write(out_dir / "chain.pem", chain.encode())
    atomic_write(out_dir / "token.jwt", token.encode())
    atomic_write(out_dir / "provisioned.json", json.dumps(provisioned, indent=2).encode())
    state = {"key": key_pem, "chain": chain, "token": token, "provisioned": provisioned}
    # A TEE without sealing (none today) keeps only the plain files above.
    with contextlib.suppress(FedattestError):
        atomic_write(out_dir / SEALED_NAME, seal(tee.sealing_key(), SEAL_PURPOSE, json.dumps(state).encode()))
    return Activation(out_dir, chain, token, provisioned)


def reprovision(
    url: str,
    root_ca_pem: str,
    member: str,
    tee: TEE,
    out_dir: Path,
    *,
    extra_keys: dict[str, ec.EllipticCurvePublicKey] | None = None,
    timeout: float = 30.0,
    policy_hash: str | None = None,
) -> tuple[Activation, bool]:
    """Inside the TEE that holds the sealed identity in ``out_dir``: when the coordinator's policy is no longer
    the one it was provisioned under, re-attest (fresh nonce, the same keys, a quote over the claims), prove
    possession of the identity key, and take the new token and provisioned parameters; no new activation is
    spent. Returns (identity, whether it changed). Raises :class:`CoordinatorError` when refused (a revoked or
    expired identity, another enclave: then activate anew), :class:`CoordinatorUnreachableError` when the
    coordinator cannot be reached, and :class:`FedattestError` when nothing is sealed. ``policy_hash``: the
    coordinator's current one, when the caller has just asked for it (not asked again)."""
    _host_port(url)
    state = _sealed_state(out_dir, tee)
    if state is None:
        raise FedattestError(f"{out_dir}: no sealed identity to re-provision")
    key = serialization.load_pem_private_key(state["key"].encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    leaf = x509.load_pem_x509_certificates(state["chain"].encode())[0]
    try:
        with httpx.Client(verify=_pinned_context(root_ca_pem, leaf_pin=False), timeout=timeout) as http:
            if policy_hash is None:  # the caller may know it already (the launchers' refresher just asked)
                policy_hash = coordinator_answer(http.get(f"{url}/api/v1/policy"), "GET /api/v1/policy")["policy_hash"]
            if policy_hash == state["provisioned"].get("policy_hash"):
                return Activation(out_dir, state["chain"], state["token"], state["provisioned"]), False
            claims = _fresh_claims(http, url, member, policy_hash, key.public_key(), extra_keys or {})
            request = {
                "member": member,
                "quote": base64.b64encode(tee.quote(ident.claims_report_data(claims))).decode(),
                "certificate": leaf.public_bytes(serialization.Encoding.PEM).decode(),
                "claims": claims,
                "signature": ident.sign_reprovision(key, claims),
            }
            result = coordinator_answer(http.post(f"{url}/api/v1/reprovision", json=request), "POST /api/v1/reprovision")
    except httpx.HTTPError as exc:
        raise CoordinatorUnreachableError(f"{url}: {exc}") from None
    return _write_identity(out_dir, tee, state["key"], state["chain"], result["token"], result["provisioned"]), True


def sealed_identity(out_dir: Path, tee: TEE) -> tuple[ec.EllipticCurvePrivateKey, str]:
    """The identity key and certificate (PEM) sealed in ``out_dir`` by this enclave's activation: what its
    heartbeats are signed with. :class:`FedattestError` when nothing is sealed."""
    state = _sealed_state(out_dir, tee)
    if state is None:
        raise FedattestError(f"{out_dir}: no sealed identity")
    key = serialization.load_pem_private_key(state["key"].encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise FedattestError(f"{out_dir}: the sealed identity key is not an EC key")
    leaf = x509.load_pem_x509_certificates(state["chain"].encode())[0]
    return key, leaf.public_bytes(serialization.Encoding.PEM).decode()


def heartbeat(http: httpx.Client, url: str, member: str, key: ec.EllipticCurvePrivateKey, certificate_pem: str) -> dict[str, Any]:
    """``POST /api/v1/alive``: tell the coordinator that this identity is running (claims ``{member, serial, time}``
    signed with its key, :func:`fedattest.pki.identity.sign_alive`); answers the policy in force
    (``{policy_hash, policy, live_seconds}``). :class:`CoordinatorError` with the status when refused (410: revoked
    or expired); ``httpx.HTTPError`` when the coordinator cannot be reached."""
    cert = x509.load_pem_x509_certificate(certificate_pem.encode())
    claims = {"member": member, "serial": format(cert.serial_number, "x"), "time": int(time.time())}
    body = {"certificate": certificate_pem, "claims": claims, "signature": ident.sign_alive(key, claims)}
    answer: dict[str, Any] = coordinator_answer(http.post(f"{url}/api/v1/alive", json=body), "POST /api/v1/alive")
    return answer


def resume(out_dir: Path, tee: TEE, *, now: datetime | None = None) -> Activation | None:
    """The identity sealed by an earlier :func:`activate` of this same enclave, if its certificate is still
    valid (with five minutes to spare); None otherwise. Another enclave cannot unseal it."""
    state = _sealed_state(out_dir, tee)
    if state is None:
        return None
    leaf = x509.load_pem_x509_certificates(state["chain"].encode())[0]
    when = now or datetime.now(UTC)
    if when + timedelta(minutes=5) >= leaf.not_valid_after_utc:
        return None
    return Activation(out_dir, state["chain"], state["token"], state["provisioned"])


def _fetch_revocations(http: httpx.Client, url: str, root: x509.Certificate) -> RevocationList:
    try:
        response = http.get(f"{url}/api/v1/crl")
    except httpx.HTTPError as exc:
        raise CoordinatorError(f"GET /api/v1/crl: {exc}") from None
    if response.status_code != 200:
        raise CoordinatorError(f"GET /api/v1/crl: HTTP {response.status_code}")
    try:
        return RevocationList.load(response.content, root, now=datetime.now(UTC))
    except FedattestError as exc:
        raise CoordinatorError(f"GET /api/v1/crl: {exc}") from None


def revocation_fetcher(url: str, root_ca_pem: str, *, timeout: float = 10.0) -> Callable[[], RevocationList]:
    """A fetcher of the coordinator's current revocation list (``GET /api/v1/crl``), checked against the pinned
    root CA: signed by it and not stale. It keeps one connection open across calls (calls must not overlap).
    Raises :class:`CoordinatorError` when the list cannot be had or checked: the caller then fails closed."""
    root = x509.load_pem_x509_certificate(root_ca_pem.encode())
    http = httpx.Client(verify=coordinator_context(root_ca_pem), timeout=timeout)
    return lambda: _fetch_revocations(http, url, root)


def resume_unless_revoked(url: str, root_ca_pem: str, out_dir: Path, tee: TEE) -> Activation | None:
    """:func:`resume`, unless the coordinator revoked that identity (a policy update removed its measurement,
    changed its data commitment, ...): then None, so the caller activates anew instead of resuming into
    refusals. If the revocation list cannot be had, the identity resumes (logged): the aggregator checks the
    list at every round anyway."""
    resumed = resume(out_dir, tee)
    if resumed is None:
        return None
    try:
        root = x509.load_pem_x509_certificate(root_ca_pem.encode())
        with httpx.Client(verify=coordinator_context(root_ca_pem), timeout=10.0) as http:
            revocations = _fetch_revocations(http, url, root)
    except (CoordinatorError, ValueError, ssl.SSLError) as exc:  # unreachable, or not a root CA PEM
        log.warning("could not check whether the sealed identity was revoked (%s): resuming it", exc)
        return resumed
    reason = revocations.reason_for(x509.load_pem_x509_certificates(resumed.certificate_chain.encode())[0])
    if reason is None:
        return resumed
    log.warning("the sealed identity was revoked by the coordinator (%s): activating anew", reason)
    return None


# Refusals that say the sealed identity cannot be re-provisioned at all (revoked, expired, another enclave, a
# member or role that changed, a certificate not its own): only these make the caller spend a new activation.
DEFINITE_REFUSALS = frozenset({400, 403, 410})


def resume_current(
    url: str,
    root_ca_pem: str,
    member: str,
    tee: TEE,
    out_dir: Path,
    *,
    extra_keys: dict[str, ec.EllipticCurvePublicKey] | None = None,
) -> tuple[Activation | None, str]:
    """The sealed identity, provisioned under the policy now in force: (identity, "resumed") when nothing
    changed, (identity, "reprovisioned") when it was re-provisioned under a new policy version (no activation
    spent), (None, why) when the caller must activate anew: nothing sealed, expired, revoked, or the coordinator
    refused to re-provision it (logged)."""
    resumed = resume_unless_revoked(url, root_ca_pem, out_dir, tee)
    if resumed is None:
        return None, "no valid sealed identity"
    try:
        identity, changed = reprovision(url, root_ca_pem, member, tee, out_dir, extra_keys=extra_keys)
    except CoordinatorUnreachableError as exc:  # as resume_unless_revoked: keep working; the next start catches up
        log.warning("could not check the coordinator's current policy (%s): resuming the sealed identity as it is", exc)
        return resumed, "resumed"
    except CoordinatorError as exc:
        if exc.status not in DEFINITE_REFUSALS:  # busy (429), unavailable (503), a policy changing meanwhile...
            log.warning("could not re-provision the sealed identity now (%s): resuming it as it is", exc)
            return resumed, "resumed"
        log.warning("the coordinator refused to re-provision the sealed identity (%s): activating anew", exc)
        return None, str(exc)
    if changed:
        log.info(
            "re-provisioned under policy %s (was %s); no activation spent",
            str(identity.provisioned.get("policy_hash"))[:16], str(resumed.provisioned.get("policy_hash"))[:16],
        )  # fmt: skip
    return identity, "reprovisioned" if changed else "resumed"
