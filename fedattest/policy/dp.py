"""The federation's differential-privacy settings: a section of the policy, and what the coordinator
provisions to the aggregator. Its own module so that a ClientApp or ServerApp process, which starts for
every Flower run or message, can read provisioned settings without loading the appraisal machinery."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DpSettings(BaseModel):
    """Server-side DP with fixed clipping (Flower's ``DifferentialPrivacyServerSideFixedClipping``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)

    noise_multiplier: float = Field(gt=0, le=100)
    clipping_norm: float = Field(gt=0, le=1e6)
    sampled_clients: int = Field(ge=1, le=1_000_000)
    target_delta: float = Field(gt=0, lt=1)

    def aggregation(self) -> dict[str, float | int]:
        """The parameters a round is aggregated with, as a round report records them (``applied_dp``)."""
        return {
            "noise_multiplier": float(self.noise_multiplier), "clipping_norm": float(self.clipping_norm),
            "sampled_clients": int(self.sampled_clients),
        }  # fmt: skip


class PrivacyBudget(BaseModel):
    """The federation's whole privacy budget (the policy's ``[privacy]``): every release (a DP training round, an
    analytics query) is charged against it by the coordinator before it happens, over the federation's whole life,
    and a release that would overspend it is refused. ``accountant`` is how releases compose: ``rdp`` (Rényi DP,
    Google's dp-accounting, replace-one neighbouring datasets), converted to (ε, δ) at ``delta``."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)

    epsilon: float = Field(gt=0, le=100)
    delta: float = Field(gt=0, lt=1)
    accountant: Literal["rdp"] = "rdp"
