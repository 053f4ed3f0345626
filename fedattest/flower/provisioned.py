"""What the coordinator provisioned to this participant (``provisioned.json`` from activation), and the
two things a Flower app needs from it: the committed dataset and the DP settings."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedattest.errors import FedattestError

if TYPE_CHECKING:
    from fedattest.data.dataset import CommittedDataset
    from fedattest.policy.dp import DpSettings


class ProvisioningError(FedattestError):
    """Provisioned parameters missing or not usable for what was asked."""


@dataclass(frozen=True)
class Provisioned:
    federation: str
    role: str
    policy_hash: str
    data_commitment: str | None
    dp_document: Mapping[str, Any] = field(hash=False)  # validated by ``dp`` on first use (see there)
    allowed_app_hashes: tuple[str, ...]
    rounds: int = 1
    attestation: str = "verified"  # "off" when the policy turned attestation off for this role

    @classmethod
    def from_json(cls, text: str | bytes) -> Provisioned:
        try:
            doc: Any = json.loads(text)
            return cls(
                federation=str(doc["federation"]),
                role=str(doc["role"]),
                policy_hash=str(doc["policy_hash"]),
                data_commitment=doc.get("data_commitment"),
                dp_document=dict(doc["dp"]),
                allowed_app_hashes=tuple(doc["allowed_app_hashes"]),
                rounds=int(doc.get("rounds", 1)),
                attestation=str(doc.get("attestation", "verified")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ProvisioningError(f"provisioned parameters are malformed: {exc}") from None

    @cached_property
    def dp(self) -> DpSettings:
        """The DP settings, validated here rather than on load: only the ServerApp needs them, and a ClientApp
        process (one per Flower message) should not pay for loading pydantic's schema machinery."""
        from fedattest.policy.dp import DpSettings  # noqa: PLC0415 - see the docstring

        try:
            return DpSettings.model_validate(self.dp_document)
        except ValueError as exc:
            raise ProvisioningError(f"provisioned DP settings are malformed: {exc}") from None


def load_provisioned(identity_dir: Path) -> Provisioned:
    """``provisioned.json`` written by ``fedattest participant activate``."""
    path = Path(identity_dir) / "provisioned.json"
    try:
        return Provisioned.from_json(path.read_bytes())
    except FileNotFoundError:
        raise ProvisioningError(f"{path}: no provisioned parameters: activate with the coordinator first") from None


def open_committed(provisioned: Provisioned, data_dir: Path) -> CommittedDataset:
    """The member's data, opened against its provisioned commitment. Refuses to train without one."""
    from fedattest.data.dataset import open_dataset  # noqa: PLC0415 - a ClientApp process that reads no data skips it

    if provisioned.data_commitment is None:
        raise ProvisioningError(f"no data commitment was provisioned for this {provisioned.role}: refusing to train")
    return open_dataset(data_dir, provisioned.data_commitment)
