"""The measured identities fedattest's launchers take in the simulated TEE when they are not started under
``fedattest workload run`` (which measures a real manifest instead): fixed, public values, so that a simulated
test federation's policy can name them (``fedattest policy init --simulated``). Simulation only: evidence from
the simulated TEE is refused unless a policy allows simulation."""

from __future__ import annotations

from hashlib import sha256

SIM_COORDINATOR_MRENCLAVE = sha256(b"fedattest coordinator (simulated)").hexdigest()
SIM_SUPERLINK_MRENCLAVE = sha256(b"fedattest flower superlink (simulated)").hexdigest()
SIM_SUPERNODE_MRENCLAVE = sha256(b"fedattest flower supernode (simulated)").hexdigest()
SIM_MRSIGNER = sha256(b"fedattest unsigned development workload").hexdigest()
