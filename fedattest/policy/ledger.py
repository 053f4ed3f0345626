"""The privacy ledger's arithmetic: what one release costs, what the releases so far have spent, and whether one
more fits the federation's budget. Pure: the coordinator keeps the ledger (each reservation an audit entry) and
``audit verify`` recomputes it from the log with these same functions.

The accounting is Google's dp-accounting (its Rényi DP accountant), never our own: a release is described as a
dp-accounting event and every release ever reserved is composed, then converted to ε at the budget's δ.
Neighbouring datasets differ by replacing one member's data (``REPLACE_ONE``), which is what fixed-size
sampling without replacement (Flower samples ``sampled_clients`` of the collaborators each round) is defined
for. dp-accounting (with scipy) is imported on first use: a process that never computes a cost does not load it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedattest.errors import FedattestError
from fedattest.policy.dp import DpSettings, PrivacyBudget

SAMPLED_GAUSSIAN = "sampled-gaussian"  # a DP-FedAvg round: Gaussian noise on the sum of sampled, clipped updates
LAPLACE = "laplace"  # a query answer with Laplace noise of this scale per unit of sensitivity
MECHANISMS = (SAMPLED_GAUSSIAN, LAPLACE)


class LedgerError(FedattestError):
    """A release description that is not one this ledger can account."""


@dataclass(frozen=True)
class Release:
    """One release's privacy cost, as a reservation records it. ``sampled-gaussian``: ``noise_multiplier`` (noise
    standard deviation over the clipping norm), ``sample_size`` of ``population`` members sampled without
    replacement. ``laplace``: ``noise_multiplier`` (scale over sensitivity; ε is its inverse)."""

    mechanism: str
    noise_multiplier: float
    sample_size: int = 1
    population: int = 1

    def __post_init__(self) -> None:
        if self.mechanism not in MECHANISMS:
            raise LedgerError(f"unknown mechanism {self.mechanism!r}: one of {', '.join(MECHANISMS)}")
        if not (math.isfinite(self.noise_multiplier) and 0 < self.noise_multiplier <= 1e6):
            raise LedgerError(f"noise_multiplier must be a finite number in (0, 1e6], got {self.noise_multiplier!r}")
        if not 1 <= self.sample_size <= self.population <= 10**9:
            raise LedgerError(f"need 1 <= sample_size <= population, got {self.sample_size} of {self.population}")

    def to_json(self) -> dict[str, Any]:
        if self.mechanism == LAPLACE:
            return {"mechanism": LAPLACE, "noise_multiplier": self.noise_multiplier}
        return {"mechanism": self.mechanism, "noise_multiplier": self.noise_multiplier, "sample_size": self.sample_size,
                "population": self.population}  # fmt: skip

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Release:
        """Strict: exactly the keys :meth:`to_json` writes for the mechanism, of their types."""
        if not isinstance(doc, Mapping):
            raise LedgerError("a release is a JSON object")
        mechanism = doc.get("mechanism")
        keys = {"mechanism", "noise_multiplier"} | ({"sample_size", "population"} if mechanism == SAMPLED_GAUSSIAN else set())
        if set(doc) != keys:
            raise LedgerError(f"a {mechanism!r} release has exactly {sorted(keys)}")
        z, k, n = doc["noise_multiplier"], doc.get("sample_size", 1), doc.get("population", 1)
        if isinstance(z, bool) or not isinstance(z, int | float) or any(type(v) is not int for v in (k, n)):
            raise LedgerError("noise_multiplier is a number, sample_size and population integers")
        return cls(str(mechanism), float(z), k, n)


def training_round(dp: DpSettings, collaborators: int) -> Release:
    """What one DP-FedAvg round under the policy's server-side fixed-clipping DP costs: the policy's noise
    multiplier, ``sampled_clients`` of the ``collaborators`` sampled."""
    return Release(SAMPLED_GAUSSIAN, float(dp.noise_multiplier), min(dp.sampled_clients, collaborators), collaborators)


def _event(release: Release) -> Any:
    import dp_accounting  # noqa: PLC0415 - scipy and all: only where a cost is computed

    if release.mechanism == LAPLACE:
        return dp_accounting.LaplaceDpEvent(release.noise_multiplier)
    gaussian = dp_accounting.GaussianDpEvent(release.noise_multiplier)
    if release.sample_size == release.population:
        return gaussian  # everyone every time: no amplification by sampling
    return dp_accounting.SampledWithoutReplacementDpEvent(release.population, release.sample_size, gaussian)


def spent(releases: Sequence[Release], delta: float) -> float:
    """ε spent at ``delta`` by all ``releases`` composed (Rényi DP accountant, replace-one neighbours); 0 for none."""
    if not releases:
        return 0.0
    import dp_accounting  # noqa: PLC0415
    from dp_accounting.rdp import rdp_privacy_accountant  # noqa: PLC0415

    accountant = rdp_privacy_accountant.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    counts: dict[Release, int] = {}
    for release in releases:  # identical releases composed as one self-composed event: rounds are alike
        counts[release] = counts.get(release, 0) + 1
    for release, count in counts.items():
        accountant.compose(dp_accounting.SelfComposedDpEvent(_event(release), count))
    return float(accountant.get_epsilon(delta))


@dataclass(frozen=True)
class Charge:
    """What reserving one more release would do: ``epsilon_before`` and ``epsilon_after`` of the budget's
    ``epsilon`` at its ``delta``; ``fits`` whether it stays within it; ``reason`` says so in one line."""

    fits: bool
    epsilon_before: float
    epsilon_after: float
    budget: PrivacyBudget
    releases: int  # reserved before this one

    @property
    def reason(self) -> str:
        remaining = max(0.0, self.budget.epsilon - self.epsilon_before)
        if self.fits:
            return (f"reserved: ε {self.epsilon_after:.4g} of {self.budget.epsilon:g} spent at δ {self.budget.delta:g}"
                    f" after {self.releases + 1} releases")  # fmt: skip
        return (f"this release would spend ε {self.epsilon_after:.4g} of the budget {self.budget.epsilon:g} at δ"
                f" {self.budget.delta:g}: {remaining:.4g} remains after {self.releases} releases")  # fmt: skip


def charge(budget: PrivacyBudget, reserved: Sequence[Release], release: Release) -> Charge:
    """Whether ``release`` fits ``budget`` after the ``reserved`` ones."""
    before = spent(reserved, budget.delta)
    after = spent([*reserved, release], budget.delta)
    return Charge(after <= budget.epsilon, before, after, budget, len(reserved))
