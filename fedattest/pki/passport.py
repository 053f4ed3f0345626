"""A member's passport, checked offline: its activation token (ES256 JWT) and its certificate chain.

The coordinator gives every activated enclave a certificate issued by its root CA and a token signed with its
token key, whose certificate (also issued by the root) rides in the token's ``x5c`` header. A relying party
that pinned only the root (a phone, a browser, an auditor) can therefore check, without asking anyone:

1. ``chain``: the leaf certificate was issued by the pinned root (and a root in the chain is that root);
2. ``validity``: the leaf is valid at the given time;
3. ``member``: the leaf names exactly one member of a federation (URI ``urn:fedattest:<fed>:member:<name>``);
4. ``token-key``: the token's key is the one ``--jwks`` lists under its ``kid``, or else the ``x5c``
   certificate, issued by the root, valid, naming only ``urn:fedattest:<fed>:token-signer``;
5. ``token-signature``: ES256 (no other algorithm) over the token by that key;
6. ``token-time``: ``iat`` is not in the future and ``exp`` has not passed;
7. ``binding``: ``cert_sha256`` is the SHA-256 of the leaf's DER, ``sub`` its member, ``iss``
   ``fedattest-coordinator:<fed>``;
8. ``revocation`` (with a CRL): the leaf's serial is not on the root's current revocation list;
9. with the policy: ``policy``: the token's ``policy_hash`` is this policy's; ``role``: the member is in it
   with the token's role; ``data-commitment``: the token's is the member's; ``attestation``: a role that
   requires attestation has ``attestation: verified``, an accepted MRENCLAVE (or MRSIGNER), an accepted TCB
   status, no rejected advisory, and simulated evidence only where simulation is allowed.

Steps 1, 4 and 5 are fatal (nothing after them can be trusted); every other failure is collected, so a
verdict lists all of them. Pure: bytes and keys in, a :class:`PassportVerdict` out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedattest.errors import FedattestError
from fedattest.pki.crl import RevocationList
from fedattest.pki.names import TOKEN_SIGNER_URI, certificate_uris, members_named
from fedattest.policy.federation import FederationPolicy
from fedattest.shape import load_json

MAX_TOKEN_BYTES = 64 * 1024  # a token is about 2 KB with its x5c certificate


class Step(StrEnum):
    CHAIN = "chain"
    VALIDITY = "validity"
    MEMBER = "member"
    TOKEN_KEY = "token-key"  # noqa: S105 - step names, not secrets
    TOKEN_SIGNATURE = "token-signature"  # noqa: S105
    TOKEN_TIME = "token-time"  # noqa: S105
    BINDING = "binding"
    REVOCATION = "revocation"
    POLICY = "policy"
    ROLE = "role"
    DATA_COMMITMENT = "data-commitment"
    ATTESTATION = "attestation"


@dataclass(frozen=True)
class PassportCheck:
    step: Step
    ok: bool
    detail: str


@dataclass
class PassportVerdict:
    """Every check made, in order; ``claims`` are the token's (only trustworthy when ``accepted``)."""

    checks: list[PassportCheck] = field(default_factory=list)
    claims: dict[str, Any] = field(default_factory=dict)
    member: str | None = None
    federation: str | None = None

    @property
    def accepted(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def reasons(self) -> list[str]:
        return [f"{c.step}: {c.detail}" for c in self.checks if not c.ok]

    def _add(self, step: Step, ok: bool, detail: str) -> bool:
        self.checks.append(PassportCheck(step, ok, detail))
        return ok


class PassportError(FedattestError):
    """Input that is not a passport at all (not a JWT, no certificate in the chain)."""


def _valid_at(cert: x509.Certificate, at: datetime) -> bool:
    return cert.not_valid_before_utc <= at <= cert.not_valid_after_utc


def _issued_by(cert: x509.Certificate, root: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _token_key(
    header: dict[str, Any], jwks: dict[str, Any] | None, root: x509.Certificate, federation: str, at: datetime
) -> tuple[Any, str]:
    """The token's verification key and where it came from; :class:`PassportError` says why there is none."""
    if jwks is not None:
        keys = [k for k in jwks.get("keys", []) if isinstance(k, dict) and k.get("kid") == header.get("kid")]
        if len(keys) != 1:
            raise PassportError(f"the JWKS has no key with the token's kid {header.get('kid')!r}")
        try:
            return jwt.PyJWK(keys[0], algorithm="ES256").key, f"JWKS key {header.get('kid')}"
        except jwt.PyJWTError as exc:
            raise PassportError(f"the JWKS key is not an ES256 key: {exc}") from None
    chain = header.get("x5c")
    if not isinstance(chain, list) or not chain or not isinstance(chain[0], str):
        raise PassportError("the token carries no x5c certificate and no JWKS was given")
    try:
        signer = x509.load_der_x509_certificate(base64.b64decode(chain[0], validate=True))
    except (ValueError, binascii.Error):
        raise PassportError("the token's x5c certificate does not parse") from None
    if not _issued_by(signer, root):
        raise PassportError("the token's x5c certificate was not issued by the root")
    if not _valid_at(signer, at):
        raise PassportError("the token's x5c certificate is not valid at this time")
    uris = certificate_uris(signer)
    if uris != [TOKEN_SIGNER_URI.format(federation=federation)]:
        raise PassportError("the token's x5c certificate is not this federation's token signer")
    key = signer.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise PassportError("the token signer's key is not P-256")
    return key, "x5c certificate issued by the root"


def verify_passport(
    token: str,
    chain_pem: bytes,
    root: x509.Certificate,
    *,
    jwks: dict[str, Any] | None = None,
    policy: FederationPolicy | None = None,
    crl_der: bytes | None = None,
    at: datetime | None = None,
) -> PassportVerdict:
    """Check one member's passport offline (see the module docstring for the steps). ``jwks`` is the
    coordinator's ``GET /api/v1/jwks`` document (without it, the token's ``x5c`` certificate is used);
    ``policy`` adds the policy checks; ``crl_der`` the revocation check. Raises :class:`PassportError` only for
    input that is not a passport at all."""
    when = at or datetime.now(UTC)
    verdict = PassportVerdict()
    if len(token) > MAX_TOKEN_BYTES:
        raise PassportError(f"the token is larger than {MAX_TOKEN_BYTES // 1024} KiB")
    try:
        certs = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        raise PassportError("the chain holds no PEM certificate") from None
    leaf = certs[0]
    # 1-3: the certificate.
    root_der = root.public_bytes(serialization.Encoding.DER)
    foreign_root = [c for c in certs[1:] if c.public_bytes(serialization.Encoding.DER) != root_der]
    chained = _issued_by(leaf, root) and not foreign_root
    if not verdict._add(Step.CHAIN, chained, "issued by the pinned root" if chained else "not issued by the pinned root"):
        return verdict
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    valid = _valid_at(leaf, when)
    span = f"{leaf.not_valid_before_utc:{stamp}} to {leaf.not_valid_after_utc:{stamp}}"
    verdict._add(Step.VALIDITY, valid, f"valid {span}" if valid else f"not valid at {when:{stamp}} (valid {span})")
    members = members_named(leaf) or []
    named = members[0] if len(members) == 1 else None
    what = f"member {named[1]!r} of {named[0]!r}" if named else "the certificate names no member, or more than one"
    if not verdict._add(Step.MEMBER, named is not None, what):
        return verdict
    assert named is not None
    verdict.federation, verdict.member = named
    # 4-6: the token.
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise PassportError(f"the token is not a JWT: {exc}") from None
    if header.get("alg") != "ES256":
        verdict._add(Step.TOKEN_KEY, False, f"the token's algorithm is {header.get('alg')!r}, not ES256")
        return verdict
    try:
        key, source = _token_key(header, jwks, root, named[0], when)
    except PassportError as exc:
        verdict._add(Step.TOKEN_KEY, False, str(exc))
        return verdict
    verdict._add(Step.TOKEN_KEY, True, source)
    try:
        # Times are checked below against ``at``, not against this machine's clock.
        claims = jwt.decode(
            token,
            key,
            algorithms=["ES256"],
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False, "verify_aud": False},
        )
    except jwt.PyJWTError as exc:
        verdict._add(Step.TOKEN_SIGNATURE, False, f"the token's signature does not verify: {exc}")
        return verdict
    verdict._add(Step.TOKEN_SIGNATURE, True, "ES256 signature verifies")
    verdict.claims = claims
    now = when.timestamp()
    iat, exp = claims.get("iat"), claims.get("exp")
    timely = isinstance(iat, int) and isinstance(exp, int) and iat <= now + 300 and now <= exp
    verdict._add(Step.TOKEN_TIME, timely, f"issued {iat}, expires {exp}" if timely else
                 f"the token is expired or not yet valid (iat {iat}, exp {exp}, now {int(now)})")  # fmt: skip
    # 7: the token names this certificate and member.
    fingerprint = hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()
    problems = []
    if claims.get("cert_sha256") != fingerprint:
        problems.append("its cert_sha256 is another certificate's")
    if claims.get("sub") != named[1]:
        problems.append(f"its subject is {claims.get('sub')!r}, the certificate's member is {named[1]!r}")
    if claims.get("iss") != f"fedattest-coordinator:{named[0]}":
        problems.append(f"its issuer is {claims.get('iss')!r}")
    verdict._add(
        Step.BINDING, not problems, "the token names this certificate and member" if not problems else "; ".join(problems)
    )
    # 8: revocation.
    if crl_der is not None:
        try:
            reason = RevocationList.load(crl_der, root, now=when).reason_for(leaf)
            verdict._add(Step.REVOCATION, reason is None, "not revoked" if reason is None else f"revoked ({reason})")
        except FedattestError as exc:
            verdict._add(Step.REVOCATION, False, f"the revocation list cannot be used: {exc}")
    # 9: the policy.
    if policy is not None:
        _check_policy(verdict, claims, policy, named)
    return verdict


def _check_policy(verdict: PassportVerdict, claims: dict[str, Any], policy: FederationPolicy, named: tuple[str, str]) -> None:
    same = claims.get("policy_hash") == policy.policy_hash().hex() and policy.name == named[0]
    verdict._add(Step.POLICY, same, "issued under this policy" if same else
                 f"issued under another policy version ({str(claims.get('policy_hash'))[:16]}...)")  # fmt: skip
    member = policy.member(named[1])
    in_role = member is not None and member.role == claims.get("role")
    role_text = f"{named[1]!r} is {'' if in_role else 'not '}a {claims.get('role')} in this policy"
    if not verdict._add(Step.ROLE, in_role, role_text):
        return
    assert member is not None
    expected = member.data_commitment.hex() if member.data_commitment else None
    verdict._add(Step.DATA_COMMITMENT, claims.get("data_commitment") == expected,
                 f"data commitment {str(expected)[:16]}..." if claims.get("data_commitment") == expected
                 else "the token's data commitment is not the member's in this policy")  # fmt: skip
    role = policy.roles[member.role]
    if not role.attestation_required:
        verdict._add(
            Step.ATTESTATION, True, f"role {member.role!r} does not require attestation (attestation {claims.get('attestation')})"
        )
        return
    reference = role.reference
    assert reference is not None
    reasons = []
    if claims.get("attestation") != "verified":
        reasons.append(f"attestation is {claims.get('attestation')!r}, the role requires it")
    else:
        mrenclave, mrsigner = _hex(claims.get("mrenclave")), _hex(claims.get("mrsigner"))
        code = (reference.mrenclave and mrenclave in reference.mrenclave) or (
            reference.mrsigner is not None and mrsigner == reference.mrsigner
        )
        if not code:
            reasons.append(
                f"MRENCLAVE {claims.get('mrenclave')} / MRSIGNER {claims.get('mrsigner')} is not accepted for the role"
            )
        if claims.get("tcb_status") not in {s.value for s in reference.accepted_tcb_statuses}:
            reasons.append(f"TCB status {claims.get('tcb_status')} is not accepted")
        rejected = sorted(set(claims.get("advisory_ids") or []) & reference.rejected_advisory_ids)
        if rejected:
            reasons.append(f"rejected advisories {', '.join(rejected)}")
        if claims.get("simulated") and not reference.allow_simulation:
            reasons.append("simulated evidence, and the role does not allow simulation")
    verdict._add(Step.ATTESTATION, not reasons, "; ".join(reasons) or
                 f"verified: MRENCLAVE {str(claims.get('mrenclave'))[:16]}..., TCB {claims.get('tcb_status')}"
                 f"{', simulated' if claims.get('simulated') else ''}")  # fmt: skip


def _hex(value: Any) -> bytes | None:
    try:
        return bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        return None


def load_jwks(data: bytes) -> dict[str, Any]:
    """A JWKS document (``{"keys": [...]}``), bounded; :class:`PassportError` otherwise."""
    if len(data) > MAX_TOKEN_BYTES:
        raise PassportError("the JWKS document is too large")
    try:
        doc = load_json(data, "the JWKS")  # nesting refused before any parser runs
    except ValueError as exc:
        raise PassportError(f"the JWKS is not usable JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise PassportError('the JWKS is not {"keys": [...]}')
    return doc
