"""fedattest: attestation and data integrity for federated learning on Intel SGX enclaves.

The entry point for deciding whether evidence is acceptable is :func:`fedattest.attest`; reference values
are :class:`fedattest.ReferenceValues` or a composition of the small references in
:mod:`fedattest.policy.appraisal` (:class:`AllOf`, :class:`AnyOf`, :class:`Mrenclave`, ...). Names are
imported on first use, so ``import fedattest`` stays cheap for the command line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedattest._lazy import lazy_attributes

__version__ = "0.1.0"

if TYPE_CHECKING:
    from fedattest.attestation import Attestation, attest
    from fedattest.policy.appraisal import (
        AllOf,
        AnyCode,
        AnyOf,
        Debug,
        ForTee,
        LaunchConfig,
        Mrenclave,
        Mrtd,
        PlatformTcb,
        Reference,
        ReferenceValues,
        Refuse,
        Signer,
        Simulation,
        Verdict,
    )
    from fedattest.steps import Step

_APPRAISAL = "fedattest.policy.appraisal"
_WHERE = {
    "attest": "attestation", "Attestation": "attestation", "Step": "steps",
    **{name: _APPRAISAL for name in (
        "AllOf", "AnyCode", "AnyOf", "Debug", "ForTee", "LaunchConfig", "Mrenclave", "Mrtd", "PlatformTcb", "Reference",
        "ReferenceValues", "Refuse", "Signer", "Simulation", "Verdict",
    )},
}  # fmt: skip

__all__ = [
    "AllOf",
    "AnyCode",
    "AnyOf",
    "Attestation",
    "Debug",
    "ForTee",
    "LaunchConfig",
    "Mrenclave",
    "Mrtd",
    "PlatformTcb",
    "Reference",
    "ReferenceValues",
    "Refuse",
    "Signer",
    "Simulation",
    "Step",
    "Verdict",
    "attest",
]

__getattr__ = lazy_attributes("fedattest", _WHERE)
