"""``current()``: the TEE this process runs in.

Inside Gramine (``/dev/attestation/attestation_type`` exists) it is :class:`GramineTEE`. Under
``fedattest workload run`` it is a :class:`SimulatedTEE` on the platform and with the identity that the
launcher measured (passed in ``FEDATTEST_SIM_PLATFORM`` and ``FEDATTEST_SIM_IDENTITY``; anyone can set
those, which is fine: simulated evidence is refused unless a policy allows simulation). Anywhere else it
raises :class:`TeeError`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fedattest.errors import TeeError
from fedattest.tee.base import TEE, WorkloadIdentity
from fedattest.tee.gramine import DEFAULT_ATTESTATION_DIR, GramineTEE
from fedattest.tee.simulated import SimulatedPlatform

ENV_PLATFORM = "FEDATTEST_SIM_PLATFORM"
ENV_IDENTITY = "FEDATTEST_SIM_IDENTITY"


def identity_to_env(identity: WorkloadIdentity) -> str:
    return json.dumps(
        {
            "mr_enclave": identity.mr_enclave.hex(),
            "mr_signer": identity.mr_signer.hex(),
            "isv_prod_id": identity.isv_prod_id,
            "isv_svn": identity.isv_svn,
            "debug": identity.debug,
            "config_id": identity.config_id.hex(),
            "config_svn": identity.config_svn,
            "kss": identity.kss,
            "isv_ext_prod_id": identity.isv_ext_prod_id.hex(),
            "isv_family_id": identity.isv_family_id.hex(),
        },
        sort_keys=True,
    )


def identity_from_env(text: str) -> WorkloadIdentity:
    try:
        doc = json.loads(text)
        return WorkloadIdentity(
            mr_enclave=bytes.fromhex(doc["mr_enclave"]),
            mr_signer=bytes.fromhex(doc["mr_signer"]),
            isv_prod_id=int(doc["isv_prod_id"]),
            isv_svn=int(doc["isv_svn"]),
            debug=bool(doc["debug"]),
            config_id=bytes.fromhex(doc.get("config_id", "00" * 64)),
            config_svn=int(doc.get("config_svn", 0)),
            kss=bool(doc.get("kss", False)),
            isv_ext_prod_id=bytes.fromhex(doc.get("isv_ext_prod_id", "00" * 16)),
            isv_family_id=bytes.fromhex(doc.get("isv_family_id", "00" * 16)),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise TeeError(f"{ENV_IDENTITY} is not a valid workload identity: {exc}") from None


def current(attestation_dir: Path = DEFAULT_ATTESTATION_DIR) -> TEE:
    """The TEE of this process (see the module docstring). Raises TeeError outside any enclave."""
    if (attestation_dir / "attestation_type").exists():
        return GramineTEE(attestation_dir)
    platform = os.environ.get(ENV_PLATFORM)
    identity = os.environ.get(ENV_IDENTITY)
    if platform and identity:
        return SimulatedPlatform.load(platform).tee(identity_from_env(identity))
    raise TeeError(
        "not running inside an enclave: start the workload with 'fedattest workload run MANIFEST --platform DIR'"
        " (simulated SGX) or with gramine-sgx on SGX hardware"
    )
