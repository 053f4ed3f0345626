"""What a ClientApp or ServerApp running in an attested participant gets from fedattest.

The launchers (``fedattest flower supernode|superlink``) tell the apps where the participant's activated
identity is: SuperNodes through ``--node-config fedattest-identity-dir=DIR data-dir=DIR`` (a ClientApp
reads ``context.node_config``), the SuperLink through the ``FEDATTEST_IDENTITY_DIR`` environment variable
(a ServerApp's node_config is empty). Security-relevant settings come from the provisioned parameters,
never from the run config, which ``flwr run -c`` can override.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fedattest.data.dataset import CommittedDataset
from fedattest.flower.provisioned import Provisioned, ProvisioningError, load_provisioned, open_committed

IDENTITY_KEY = "fedattest-identity-dir"
DATA_KEY = "data-dir"
IDENTITY_ENV = "FEDATTEST_IDENTITY_DIR"


def _node_config(context: Any) -> dict[str, Any]:
    config = getattr(context, "node_config", None)
    return dict(config) if config else {}


def identity_dir_for(context: Any) -> Path:
    """The activated identity directory of the participant this app runs in (node config, else environment)."""
    where = _node_config(context).get(IDENTITY_KEY) or os.environ.get(IDENTITY_ENV)
    if not where:
        raise ProvisioningError(
            "no attested identity: run under 'fedattest flower supernode|superlink'"
            f" (node config {IDENTITY_KEY!r} or ${IDENTITY_ENV})"
        )
    return Path(str(where))


def provisioned_for(context: Any) -> Provisioned:
    """The provisioned parameters of the participant this app runs in (node config, else environment)."""
    return load_provisioned(identity_dir_for(context))


def committed_dataset(context: Any) -> CommittedDataset:
    """Inside a ClientApp: the member's data, opened against its provisioned commitment (refuses without one)."""
    data_dir = _node_config(context).get(DATA_KEY)
    if not data_dir:
        raise ProvisioningError(f"no data directory: start the SuperNode with --data DIR (node config {DATA_KEY!r})")
    return open_committed(provisioned_for(context), Path(str(data_dir)))


def dp_strategy(strategy: Any, context: Any) -> Any:
    """Inside a ServerApp: ``strategy`` wrapped with Flower's server-side fixed-clipping DP, using the
    provisioned noise multiplier, clipping norm and number of sampled clients (refuses without them)."""
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping  # noqa: PLC0415 - Flower only here

    dp = provisioned_for(context).dp
    return DifferentialPrivacyServerSideFixedClipping(
        strategy, noise_multiplier=dp.noise_multiplier, clipping_norm=dp.clipping_norm, num_sampled_clients=dp.sampled_clients
    )
