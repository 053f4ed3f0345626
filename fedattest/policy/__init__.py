"""Federation policy and appraisal of verified evidence against reference values."""

from fedattest.policy.appraisal import DEFAULT_ACCEPTED_TCB, ReferenceValues, Verdict, appraise
from fedattest.policy.approval import Approval, ApprovalCheck, approve, check_approvals
from fedattest.policy.federation import FederationPolicy, Member, PolicyError, RolePolicy, parse_policy

__all__ = [
    "DEFAULT_ACCEPTED_TCB",
    "Approval",
    "ApprovalCheck",
    "FederationPolicy",
    "Member",
    "PolicyError",
    "ReferenceValues",
    "RolePolicy",
    "Verdict",
    "appraise",
    "approve",
    "check_approvals",
    "parse_policy",
]
