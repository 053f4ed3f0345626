"""A starting policy for ``fedattest policy init``: every section, with comments saying what it means."""

from __future__ import annotations

from fedattest.tee.sim_identities import SIM_COORDINATOR_MRENCLAVE, SIM_SUPERLINK_MRENCLAVE, SIM_SUPERNODE_MRENCLAVE

EXAMPLE_MRENCLAVE = "00" * 32
TEMPLATE_MEMBERS = ("aggregator", "hospital-a")  # the example members the template writes


def _toml_multiline(pem: str) -> str:
    return '"""\n' + pem.strip() + '\n"""'


def _privacy(budget: tuple[float, float] | None) -> str:
    if budget is None:
        return ""
    epsilon, delta = budget
    return f"""# The federation's whole privacy budget: the coordinator charges every DP release (each training round) against
# it before it happens, and refuses the one that would overspend it (docs/privacy.md).
[privacy]
epsilon = {epsilon!r}
delta = {delta!r}

"""


def _collaborator(name: str, keys: dict[str, str], commitment: str) -> str:
    return f"""
[[members]]
name = "{name}"
role = "collaborator"
enrolment_key = {_enrolment_key(name, keys)}
data_commitment = "{commitment}"  # root printed by 'fedattest data commit'
max_activations = 3                     # a wiped or lost sealed identity costs one (a policy update does not)
"""


def _enrolment_key(member: str, keys: dict[str, str]) -> str:
    pem = keys.get(
        member, f"PASTE {member}.pub.pem here: the member runs 'fedattest policy keygen {member}' and keeps {member}.key"
    )
    return _toml_multiline(pem)


def policy_template(
    name: str,
    approvers: list[tuple[str, str]],
    required: int | None = None,
    enrolment_keys: dict[str, str] | None = None,
    *,
    simulated: bool = False,
    commitments: dict[str, str] | None = None,
    collaborators: tuple[str, ...] = TEMPLATE_MEMBERS[1:],
    app_hashes: tuple[str, ...] = (),
    rounds: int = 3,
    privacy: tuple[float, float] | None = None,
) -> str:
    """The template text. ``approvers`` are (name, public key PEM); without any, an approver entry with a
    placeholder key is written and ``policy check`` will say what to put there. ``enrolment_keys`` (member
    name -> public key PEM) fill in the example members' keys; placeholders otherwise. ``simulated``: a test
    federation in the simulated TEE that works as written with fedattest's launchers (their simulated
    measurements, simulation allowed). ``commitments`` (member -> hex root from ``fedattest data commit``) fill
    in the collaborators' data commitments. ``collaborators`` names the collaborator members (each sampled every
    round), ``app_hashes`` the allowed apps (a placeholder without any), ``rounds`` the training rounds, ``privacy``
    the federation's (ε, δ) budget (a ``[privacy]`` section; none without it)."""
    keys = enrolment_keys or {}
    # A simulated federation runs on one machine: SuperNodes and 'flwr run' reach the SuperLink as localhost.
    aggregator_names = '"localhost"' if simulated else '"aggregator.example.org", "localhost"'
    if simulated:
        coordinator_code, aggregator_code = f'["{SIM_COORDINATOR_MRENCLAVE}"]', f'["{SIM_SUPERLINK_MRENCLAVE}"]'
        collaborator_code = (
            "# The simulated SuperNode launcher's measurement ('fedattest flower supernode' outside 'workload run').\n"
            f'mrenclave = ["{SIM_SUPERNODE_MRENCLAVE}"]'
        )
        simulation = "true "
    else:
        coordinator_code = aggregator_code = f'["{EXAMPLE_MRENCLAVE}"]'
        collaborator_code = (
            "# Identify by signer instead of exact build: any build by this key, product 1, security version >= 2.\n"
            f'mrsigner = "{EXAMPLE_MRENCLAVE}"\nisv_prod_id = 1\nmin_isv_svn = 2'
        )
        simulation = "false"
    blocks = []
    for who, pem in approvers or [("alice", "PASTE the output of 'fedattest policy keygen alice' (alice.pub.pem) here")]:
        blocks.append(f'[[approvals.approvers]]\nname = "{who}"\npublic_key = {_toml_multiline(pem)}\n')
    need = required or max(1, len(approvers))
    return f"""\
# fedattest federation policy. Every member approves this exact document (its canonical hash):
#   fedattest policy check policy.toml
#   fedattest policy approve policy.toml --name alice --key alice.key -o alice.approval.json
version = 1
name = "{name}"

# The coordinator enclave: members verify it against these values before trusting it.
[coordinator]
mrenclave = {coordinator_code}     # from 'fedattest workload measure' or 'fedattest sigstruct show'
allow_debug = false
accepted_tcb_statuses = ["UpToDate", "SWHardeningNeeded"]
rejected_advisory_ids = []
allow_simulation = {simulation}                # true only for simulated (non-SGX) test federations

# Each role: whether attestation is required, and what its enclave must be.
[roles.aggregator]
attestation_required = true
mrenclave = {aggregator_code}
allow_simulation = {simulation}

[roles.collaborator]
attestation_required = true
{collaborator_code}
allow_simulation = {simulation}

# Each member's enrolment_key is its own Ed25519 public key ('fedattest policy keygen NAME'): an enclave
# activates as the member only with the member's signature (participant activate --enrolment-key NAME.key).
[[members]]
name = "aggregator"
role = "aggregator"
enrolment_key = {_enrolment_key("aggregator", keys)}
dns_names = [{aggregator_names}]  # names SuperNodes and 'flwr run' reach the SuperLink at: in its certificate
max_activations = 3

{"".join(_collaborator(name, keys, (commitments or {}).get(name, EXAMPLE_MRENCLAVE)) for name in collaborators)}
# Bounds of what a run releases: from the approved policy, never from a run's configuration.
[training]
rounds = {rounds}

[dp]
noise_multiplier = 1.0
clipping_norm = 1.0
sampled_clients = {len(collaborators)}
target_delta = 1e-5

{_privacy(privacy)}[apps]
# SHA-256 of every Flower app bundle the participants may run ('fedattest policy add-app' adds one).
allowed_hashes = [{", ".join(f'"{h}"' for h in app_hashes or (EXAMPLE_MRENCLAVE,))}]

[approvals]
required = {need}

""" + "\n".join(blocks)
