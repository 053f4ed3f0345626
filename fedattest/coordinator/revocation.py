"""Which live identities a policy update revokes.

An identity (a member certificate) was issued under the policy in force at its activation, and the
coordinator provisioned the member from that policy: its role, its data commitment, the allowed apps, and
for the aggregator the DP and training settings. When a new policy takes force, each live identity is
judged again against it: one that the new policy would not issue, or that runs on parameters the new
policy withdrew, is revoked. Pure: policies and evidence in, a reason (or None) out.
"""

from __future__ import annotations

from cryptography import x509

from fedattest.dcap.result import VerifiedQuote
from fedattest.policy.appraisal import appraise
from fedattest.policy.federation import FederationPolicy

# What the CRL says for each kind of reason (RFC 5280 reason codes).
LEFT = x509.ReasonFlags.affiliation_changed  # the member left the policy or changed role
WITHDRAWN = x509.ReasonFlags.privilege_withdrawn  # its evidence, data or apps are no longer accepted
SUPERSEDED = x509.ReasonFlags.superseded  # the aggregator's provisioned DP or training settings changed


def revocation_reason(
    member_name: str,
    role: str,
    verified: VerifiedQuote | None,
    then: FederationPolicy | None,
    now: FederationPolicy,
) -> tuple[str, x509.ReasonFlags] | None:
    """Why the identity of ``member_name`` (activated as ``role`` under policy ``then``, with evidence
    ``verified``; None when attestation was off) must not outlive the change to ``now``; None to keep it.
    ``then`` is None when the activation's policy version is unknown: only ``now`` is then checked."""
    member = now.member(member_name)
    if member is None:
        return "the member was removed from the policy", LEFT
    if member.role != role:
        return f"the member's role changed to {member.role}", LEFT
    before = then.member(member_name) if then is not None else None
    if before is not None and before.data_commitment != member.data_commitment:
        return "the member's data commitment changed", WITHDRAWN
    if before is not None and before.enrolment_key != member.enrolment_key:
        return "the member's enrolment key changed", WITHDRAWN
    required = now.roles[role]
    if required.attestation_required:
        if verified is None:
            return f"role {role!r} now requires attestation", WITHDRAWN
        reference = now.reference_for(member)  # the role's, with the member's CONFIGID when the role binds it
        assert reference is not None  # attestation_required implies reference values
        verdict = appraise(verified, reference)
        if not verdict.accepted:
            return f"its evidence is no longer accepted: {verdict.reason}", WITHDRAWN
    if then is not None:
        removed = sorted(set(then.apps.allowed_hashes) - set(now.apps.allowed_hashes))
        if removed:
            return f"app {removed[0].hex()[:16]}..., provisioned to it, is no longer allowed", WITHDRAWN
        if role == "aggregator" and (then.dp != now.dp or then.training != now.training):
            return "the DP or training settings provisioned to the aggregator changed", SUPERSEDED
    return None
