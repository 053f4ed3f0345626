"""What a ClientApp or ServerApp running in an attested participant gets from fedattest.

The launchers (``fedattest flower supernode|superlink``) tell the apps where the participant's activated
identity is: SuperNodes through ``--node-config fedattest-identity-dir=DIR data-dir=DIR`` (a ClientApp
reads ``context.node_config``), the SuperLink through the ``FEDATTEST_IDENTITY_DIR`` environment variable
(a ServerApp's node_config is empty). Security-relevant settings come from the provisioned parameters,
never from the run config, which ``flwr run -c`` can override.

The same app runs unchanged where there is no attested participant (Flower's simulation engine, a plain
SuperNode): :func:`is_attested` is false there, and the attestation features say "not attested" once in the log
and step aside (the signing mod signs nothing, :func:`dp_strategy` and ``attested_strategy`` return the strategy
as given, :func:`committed_dataset` reads the node config's ``data-dir`` unchecked). That is safe because the
protection is not in the app: an attested aggregator counts only signed updates from attested members and applies
the policy's DP and rounds to whatever strategy the app starts, and an attested SuperNode signs every reply itself.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from fedattest.flower.provisioned import Provisioned, ProvisioningError, load_provisioned, open_committed

if TYPE_CHECKING:
    from fedattest.data.dataset import CommittedDataset

IDENTITY_KEY = "fedattest-identity-dir"
DATA_KEY = "data-dir"
IDENTITY_ENV = "FEDATTEST_IDENTITY_DIR"
NOT_ATTESTED = "not attested"
log = logging.getLogger("fedattest.flower")
_said: set[str] = set()


def _node_config(context: Any) -> dict[str, Any]:
    config = getattr(context, "node_config", None)
    return dict(config) if config else {}


def is_attested(context: Any) -> bool:
    """Whether this app runs in a participant started by fedattest's launchers (an attested identity is configured
    for it). False in Flower's simulation engine and in plain Flower processes."""
    return bool(_node_config(context).get(IDENTITY_KEY) or os.environ.get(IDENTITY_ENV))


def not_attested(feature: str, instead: str) -> None:
    """Say once per process that ``feature`` steps aside because this app is not attested, and what happens instead."""
    if feature not in _said:
        _said.add(feature)
        log.warning("%s: %s (no fedattest identity: Flower's simulation engine or a plain Flower process); %s",
                    feature, NOT_ATTESTED, instead)  # fmt: skip


class UncheckedDataset:
    """A data directory read as it is, where there is no commitment to check it against (not attested): the read
    methods of :class:`~fedattest.data.dataset.CommittedDataset`, with ``checked`` false."""

    checked = False

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, name: str | Path) -> Path:
        path = (self.directory / name).resolve()
        if not path.is_relative_to(self.directory.resolve()):
            raise ProvisioningError(f"{name}: outside the data directory")
        return path

    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.directory)) for p in self.directory.rglob("*") if p.is_file())

    def size(self, name: str | Path) -> int:
        return self._path(name).stat().st_size

    def open(self, name: str | Path) -> IO[bytes]:
        return self._path(name).open("rb")

    def read_bytes(self, name: str | Path) -> bytes:
        return self._path(name).read_bytes()


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


def committed_dataset(context: Any, *, default_dir: str | Path | None = None) -> CommittedDataset | UncheckedDataset:
    """Inside a ClientApp: the member's data, opened against its provisioned commitment (refuses without one). Not
    attested (see the module): the node config's ``data-dir``, else ``default_dir`` (e.g. a directory per
    ``partition-id`` in Flower's simulation engine), read unchecked, said once in the log. ``default_dir`` is never
    read in an attested participant."""
    data_dir = _node_config(context).get(DATA_KEY)
    if not is_attested(context):
        where = data_dir or default_dir
        if not where:
            raise ProvisioningError(f"{NOT_ATTESTED}, and no {DATA_KEY!r} in the node config nor default_dir: no data to read")
        not_attested("committed_dataset", f"reading {where} unchecked")
        return UncheckedDataset(Path(str(where)))
    if not data_dir:
        raise ProvisioningError(f"no data directory: start the SuperNode with --data DIR (node config {DATA_KEY!r})")
    return open_committed(provisioned_for(context), Path(str(data_dir)))


def dp_strategy(strategy: Any, context: Any) -> Any:
    """Inside a ServerApp: ``strategy`` wrapped with Flower's server-side fixed-clipping DP, using the
    provisioned noise multiplier, clipping norm and number of sampled clients (refuses without them). Not attested
    (see the module): ``strategy`` as given, said once in the log."""
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping  # noqa: PLC0415 - Flower only here

    if not is_attested(context):
        not_attested("dp_strategy", "the strategy runs without the policy's DP")
        return strategy

    dp = provisioned_for(context).dp
    return DifferentialPrivacyServerSideFixedClipping(
        strategy, noise_multiplier=dp.noise_multiplier, clipping_norm=dp.clipping_norm, num_sampled_clients=dp.sampled_clients
    )
