"""Trusted execution environments that produce DCAP quotes: a simulated SGX platform (for laptops and
CI) and Gramine on real SGX hardware. Both implement :class:`TEE`."""

from fedattest.tee.base import REPORT_DATA_SIZE, TEE, WorkloadIdentity
from fedattest.tee.current import current
from fedattest.tee.gramine import GramineTEE
from fedattest.tee.sim_collateral import Scenario
from fedattest.tee.simulated import SimulatedPlatform, SimulatedTEE

__all__ = [
    "REPORT_DATA_SIZE",
    "TEE",
    "GramineTEE",
    "Scenario",
    "SimulatedPlatform",
    "SimulatedTEE",
    "WorkloadIdentity",
    "current",
]
