"""Flower integration: only approved apps run, updates are signed by attested members, and the data and
DP settings come from what the coordinator provisioned. The launchers are ``fedattest flower superlink|supernode``."""

from fedattest.flower.apps import AppGate, AppNotAllowedError, fab_hash
from fedattest.flower.context import committed_dataset_for, dp_strategy, provisioned_for
from fedattest.flower.gate import install_app_gate
from fedattest.flower.provisioned import Provisioned, committed_dataset, load_provisioned
from fedattest.flower.serverapp import attested_signing_mod, attested_strategy
from fedattest.flower.signing import UpdateSigner, UpdateVerifier, update_digest

__all__ = [
    "AppGate",
    "AppNotAllowedError",
    "Provisioned",
    "UpdateSigner",
    "UpdateVerifier",
    "attested_signing_mod",
    "attested_strategy",
    "committed_dataset",
    "committed_dataset_for",
    "dp_strategy",
    "fab_hash",
    "install_app_gate",
    "load_provisioned",
    "provisioned_for",
    "update_digest",
]
