"""A starting policy for ``fedattest policy init``: every section, with comments saying what it means."""

from __future__ import annotations

EXAMPLE_MRENCLAVE = "00" * 32
TEMPLATE_MEMBERS = ("aggregator", "hospital-a")  # the example members the template writes


def _toml_multiline(pem: str) -> str:
    return '"""\n' + pem.strip() + '\n"""'


def _enrolment_key(member: str, keys: dict[str, str]) -> str:
    pem = keys.get(
        member, f"PASTE {member}.pub.pem here: the member runs 'fedattest policy keygen {member}' and keeps {member}.key"
    )
    return _toml_multiline(pem)


def policy_template(
    name: str, approvers: list[tuple[str, str]], required: int | None = None, enrolment_keys: dict[str, str] | None = None
) -> str:
    """The template text. ``approvers`` are (name, public key PEM); without any, an approver entry with a
    placeholder key is written and ``policy check`` will say what to put there. ``enrolment_keys`` (member
    name -> public key PEM) fill in the example members' keys; placeholders otherwise."""
    keys = enrolment_keys or {}
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
mrenclave = ["{EXAMPLE_MRENCLAVE}"]     # from 'fedattest workload measure' or 'fedattest sigstruct show'
allow_debug = false
accepted_tcb_statuses = ["UpToDate", "SWHardeningNeeded"]
rejected_advisory_ids = []
allow_simulation = false                # true only for simulated (non-SGX) test federations

# Each role: whether attestation is required, and what its enclave must be.
[roles.aggregator]
attestation_required = true
mrenclave = ["{EXAMPLE_MRENCLAVE}"]
allow_simulation = false

[roles.collaborator]
attestation_required = true
# Identify by signer instead of exact build: any build by this key, product 1, security version >= 2.
mrsigner = "{EXAMPLE_MRENCLAVE}"
isv_prod_id = 1
min_isv_svn = 2
allow_simulation = false

# Each member's enrolment_key is its own Ed25519 public key ('fedattest policy keygen NAME'): an enclave
# activates as the member only with the member's signature (participant activate --enrolment-key NAME.key).
[[members]]
name = "aggregator"
role = "aggregator"
enrolment_key = {_enrolment_key("aggregator", keys)}
dns_names = ["aggregator.example.org"]
max_activations = 3

[[members]]
name = "hospital-a"
role = "collaborator"
enrolment_key = {_enrolment_key("hospital-a", keys)}
data_commitment = "{EXAMPLE_MRENCLAVE}"  # root printed by 'fedattest data commit'
max_activations = 1

[dp]
noise_multiplier = 1.0
clipping_norm = 1.0
sampled_clients = 1
target_delta = 1e-5

[apps]
# SHA-256 of every Flower app bundle the participants may run.
allowed_hashes = ["{EXAMPLE_MRENCLAVE}"]

[approvals]
required = {need}

""" + "\n".join(blocks)
