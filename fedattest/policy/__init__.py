"""Federation policy and appraisal of verified evidence against reference values.

Names are imported on first use, so that ``fedattest.policy.dp`` (read inside every Flower app process)
does not load the appraisal and DCAP modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedattest._lazy import lazy_attributes

if TYPE_CHECKING:
    from fedattest.policy.appraisal import DEFAULT_ACCEPTED_TCB, ReferenceValues, Verdict, appraise
    from fedattest.policy.approval import Approval, ApprovalCheck, approve, check_approvals
    from fedattest.policy.federation import FederationPolicy, Member, PolicyError, RolePolicy, parse_policy

_WHERE = {
    "DEFAULT_ACCEPTED_TCB": "appraisal", "ReferenceValues": "appraisal", "Verdict": "appraisal", "appraise": "appraisal",
    "Approval": "approval", "ApprovalCheck": "approval", "approve": "approval", "check_approvals": "approval",
    "FederationPolicy": "federation", "Member": "federation", "PolicyError": "federation", "RolePolicy": "federation",
    "parse_policy": "federation",
}  # fmt: skip

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

__getattr__ = lazy_attributes(__name__, _WHERE)
