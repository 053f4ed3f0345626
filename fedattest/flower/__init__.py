"""Flower integration: only approved apps run, updates are signed by attested members, and the data and
DP settings come from what the coordinator provisioned. The launchers are ``fedattest flower superlink|supernode``.

Names are imported on first use: a ClientApp process (started for every message) then loads only the
client side, not the server side's TLS, coordinator and SuperLink machinery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedattest._lazy import lazy_attributes

if TYPE_CHECKING:
    from fedattest.flower.apps import AppGate, AppNotAllowedError, fab_hash
    from fedattest.flower.context import committed_dataset, dp_strategy, is_attested, provisioned_for
    from fedattest.flower.gate import install_app_gate
    from fedattest.flower.mods import attested_signing_mod
    from fedattest.flower.provisioned import Provisioned, load_provisioned, open_committed
    from fedattest.flower.serverapp import attested_strategy
    from fedattest.pki.signing import UpdateSigner, UpdateVerifier, update_digest

_WHERE = {
    "AppGate": "apps", "AppNotAllowedError": "apps", "fab_hash": "apps",
    "committed_dataset": "context", "dp_strategy": "context", "is_attested": "context", "provisioned_for": "context",
    "install_app_gate": "gate", "attested_signing_mod": "mods",
    "Provisioned": "provisioned", "load_provisioned": "provisioned", "open_committed": "provisioned",
    "attested_strategy": "serverapp",
    "UpdateSigner": "fedattest.pki.signing", "UpdateVerifier": "fedattest.pki.signing",
    "update_digest": "fedattest.pki.signing",
}  # fmt: skip

__all__ = [
    "AppGate", "AppNotAllowedError", "Provisioned", "UpdateSigner", "UpdateVerifier", "attested_signing_mod",
    "attested_strategy", "committed_dataset", "dp_strategy", "fab_hash", "install_app_gate", "is_attested", "load_provisioned",
    "open_committed", "provisioned_for", "update_digest",
]  # fmt: skip

__getattr__ = lazy_attributes(__name__, _WHERE)
