"""The activation request, judged without I/O: is it well formed, for a member of this policy, bound to its
CSR key and extra keys, and signed by the member's enrolment key? Pure: the policy and the request in, a
:class:`CheckedRequest` (or an :class:`ActivationError` naming the check) out. The coordinator's shell
(:mod:`fedattest.coordinator.core`) adds what needs state or I/O: the nonce, the evidence (attestation,
with collateral), issuing, and the store.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedattest.errors import FedattestError
from fedattest.pki import identity as ident
from fedattest.pki.names import members_named
from fedattest.policy.federation import FederationPolicy, Member

CLAIM_KEYS = frozenset({"member", "nonce", "policy_hash", "keys"})


class ActivationError(FedattestError):
    """An activation (or request) refused; ``status`` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 403) -> None:
        self.status = status
        super().__init__(message)


_KEY_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


def _bound_public_keys(public_keys: dict[str, str], claimed: dict[str, Any]) -> dict[str, str]:
    """Extra public keys sent with an activation (e.g. ``node``, the Flower node key): each must be a P-256
    key whose SPKI hash the (quoted) claims list under the same name. Returns name -> hash."""
    if len(public_keys) > 8:
        raise ActivationError("at most 8 extra public keys", 400)
    hashes: dict[str, str] = {}
    for name, pem in public_keys.items():
        if name == "tls" or not _KEY_NAME.match(name):
            raise ActivationError(f"public key name {name!r} is not allowed (lower-case, not 'tls')", 400)
        try:
            key = serialization.load_pem_public_key(pem.encode())
        except ValueError:
            raise ActivationError(f"public key {name!r} is not a PEM public key", 400) from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise ActivationError(f"public key {name!r} must be an EC P-256 key", 400)
        digest = ident.spki_sha256(key)
        if claimed.get(name) != digest:
            raise ActivationError(f"claims do not bind the public key {name!r}", 400)
        hashes[name] = digest
    return hashes


@dataclass(frozen=True)
class CheckedRequest:
    member: Member
    csr: x509.CertificateSigningRequest
    public_keys: dict[str, str]  # extra key name -> SHA-256 of its SubjectPublicKeyInfo, as the claims bind them


def claims_nonce(claims: dict[str, Any]) -> str:
    """The claims' nonce, once their shape is right (exactly the four keys, ``keys`` a mapping)."""
    if set(claims) != CLAIM_KEYS or not isinstance(claims.get("keys"), dict):
        raise ActivationError(f"claims must have exactly {sorted(CLAIM_KEYS)}", 400)
    return str(claims["nonce"])


def _check_claims(policy: FederationPolicy, member_name: str, claims: dict[str, Any]) -> None:
    """The claims have their shape and name this member and the policy version in force."""
    claims_nonce(claims)
    if claims["member"] != member_name:
        raise ActivationError("claims name another member", 400)
    if claims["policy_hash"] != policy.policy_hash().hex():
        raise ActivationError("claims are for another policy version: fetch the current policy and retry", 409)


def check_request(  # noqa: PLR0917 - the request's fields
    policy: FederationPolicy,
    member_name: str,
    csr_pem: str,
    claims: dict[str, Any],
    public_keys: dict[str, str],
    enrolment: str | None,
) -> CheckedRequest:
    """Every check of an activation request that needs neither state nor I/O, in order: the member is in the
    policy; the CSR parses (proof of possession); the claims have their shape, name this member and this policy
    version, and bind the CSR's key and every extra key; the member's enrolment key signed these claims."""
    member = policy.member(member_name)
    if member is None:
        raise ActivationError(f"unknown member {member_name!r}: not in policy {policy.name!r}")
    try:
        csr = ident.load_csr(csr_pem)
    except FedattestError as exc:
        raise ActivationError(str(exc), 400) from None
    _check_claims(policy, member_name, claims)
    extra_hashes = _bound_public_keys(public_keys, claims["keys"])
    if claims["keys"].get("tls") != ident.spki_sha256(csr.public_key()):  # type: ignore[arg-type]
        raise ActivationError("claims do not bind the CSR's key (keys.tls must be the SHA-256 of its SubjectPublicKeyInfo)", 400)
    # Only the member's own key makes an enclave this member (checked before any quote is verified, so an
    # outsider cannot make the coordinator verify quotes for nothing).
    if not enrolment:
        raise ActivationError(
            f"activating as {member.name!r} needs {member.name!r}'s enrolment signature over these claims"
            " (give the member's key: --enrolment-key)"
        )
    if not ident.enrolment_signed_by(member.enrolment_key, claims, enrolment):
        raise ActivationError(
            f"the enrolment signature is not {member.name!r}'s: it does not verify over these claims with the"
            f" enrolment_key the policy lists for {member.name!r}"
        )
    return CheckedRequest(member, csr, extra_hashes)


@dataclass(frozen=True)
class CheckedRenewal:
    member: Member
    certificate: x509.Certificate
    fingerprint: str


def check_reprovision(  # noqa: PLR0917 - the request's fields
    policy: FederationPolicy,
    member_name: str,
    certificate_pem: str,
    claims: dict[str, Any],
    signature: str,
    root: x509.Certificate,
) -> CheckedRenewal:
    """Every check of a re-provisioning request that needs neither state nor I/O, in order: the member is in the
    policy; the certificate is one the coordinator's root issued to this member; the claims have their shape,
    name this member and the current policy version, and bind the certificate's key; the
    certificate's key signed them (proof of possession). The shell then checks that the certificate is a live
    activation of this member (not revoked, not expired) and re-attests the enclave."""
    member, cert = _members_certificate(policy, member_name, certificate_pem, root, " (activate anew)")
    _check_claims(policy, member_name, claims)
    if claims["keys"].get("tls") != ident.spki_sha256(cert):
        raise ActivationError("claims do not bind the certificate's key (keys.tls)", 400)
    if not ident.reprovision_signed_by(cert, claims, signature):
        raise ActivationError("the signature over the claims is not by the certificate's key")
    fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return CheckedRenewal(member, cert, fingerprint)


def check_same_keys(claims: dict[str, Any], activation_keys: dict[str, str]) -> None:
    """:class:`ActivationError` unless the claims bind, besides ``tls``, exactly the extra keys (name -> SPKI
    hash) the identity's activation bound: a re-provisioning brings no new key in."""
    if {name: digest for name, digest in claims["keys"].items() if name != "tls"} != activation_keys:
        raise ActivationError("the claims bind other keys than the activation did", 400)


def _members_certificate(
    policy: FederationPolicy, member_name: str, certificate_pem: str, root: x509.Certificate, unknown_hint: str = ""
) -> tuple[Member, x509.Certificate]:
    """The policy's member ``member_name`` and ``certificate_pem``, checked to be a certificate the coordinator's
    ``root`` issued to that member; :class:`ActivationError` otherwise."""
    member = policy.member(member_name)
    if member is None:
        raise ActivationError(f"unknown member {member_name!r}: not in policy {policy.name!r}{unknown_hint}")
    try:
        cert = x509.load_pem_x509_certificate(certificate_pem.encode())
        cert.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature):
        raise ActivationError("the certificate was not issued by this coordinator", 400) from None
    if (policy.name, member_name) not in (members_named(cert) or []):
        raise ActivationError(f"the certificate is not {member_name!r}'s", 400)
    return member, cert


ALIVE_CLAIM_KEYS = frozenset({"member", "serial", "time"})


def check_alive(
    policy: FederationPolicy, certificate_pem: str, claims: dict[str, Any], signature: str, root: x509.Certificate
) -> CheckedRenewal:
    """Every check of a heartbeat (``POST /api/v1/alive``) that needs neither state nor I/O, in order: the claims
    have their shape; their member is in the policy; the certificate is one the coordinator's root issued to that
    member, and the one the claims name (``serial``, hex); its key signed the claims. The shell then checks the
    time, that the certificate is an activation of the member, and that it is neither revoked nor expired."""
    if not isinstance(claims, dict) or set(claims) != ALIVE_CLAIM_KEYS:
        raise ActivationError(f"heartbeat claims must have exactly {sorted(ALIVE_CLAIM_KEYS)}", 400)
    member_name, serial = claims["member"], claims["serial"]
    if not isinstance(member_name, str) or not isinstance(serial, str) or type(claims["time"]) is not int:
        raise ActivationError("heartbeat claims: member and serial are strings, time an integer", 400)
    member, cert = _members_certificate(policy, member_name, certificate_pem, root)
    if serial != format(cert.serial_number, "x"):
        raise ActivationError("the claims name another certificate (serial) than the one sent", 400)
    if not ident.alive_signed_by(cert, claims, signature):
        raise ActivationError("the signature over the heartbeat is not by the certificate's key")
    fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return CheckedRenewal(member, cert, fingerprint)
