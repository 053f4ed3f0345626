"""Federation policy and appraisal of verified evidence against reference values."""

from fedattest.policy.appraisal import DEFAULT_ACCEPTED_TCB, ReferenceValues, Verdict, appraise

__all__ = ["DEFAULT_ACCEPTED_TCB", "ReferenceValues", "Verdict", "appraise"]
