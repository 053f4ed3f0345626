"""``fedattest policy init|keygen|check|hash|approve|show|add-app``."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fedattest.cli._common import EXIT_REJECTED, CliError, CliUsageError, print_json, print_rich, read_input
from fedattest.errors import FedattestError
from fedattest.files import atomic_write
from fedattest.policy.template import TEMPLATE_MEMBERS, policy_template

# The policy schema (pydantic), the approval signatures (cryptography) and rich's tables are imported by
# the commands that use them: 'policy init' needs none of them, 'policy check' no table.
if TYPE_CHECKING:
    from fedattest.policy.federation import FederationPolicy

app = typer.Typer(
    name="policy",
    help=(
        "Write, check, hash and approve the federation policy (one TOML document all members approve).\n\n"
        "Example:\n\n"
        "  fedattest policy keygen alice            # alice.key (keep it) and alice.pub.pem (share it)\n\n"
        "  fedattest policy keygen hospital-a       # a member's enrolment key, the same way\n\n"
        "  fedattest policy init --approver alice=alice.pub.pem --enrolment-key hospital-a=hospital-a.pub.pem -o policy.toml\n\n"
        "  fedattest policy approve policy.toml --name alice --key alice.key -o alice.approval.json\n\n"
        "  fedattest policy check policy.toml --approval alice.approval.json"
    ),
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

PolicyArg = Annotated[Path, typer.Argument(metavar="POLICY", help="Policy TOML file.", show_default=False)]


def load_policy(path: Path) -> FederationPolicy:
    from fedattest.policy.federation import parse_policy  # noqa: PLC0415 - see the imports at the top

    try:
        return parse_policy(read_input(str(path), "policy file"))
    except FedattestError as exc:
        raise CliUsageError(f"{path}: {exc}") from None


def _write(output: Path | None, data: bytes, what: str, mode: int = 0o644) -> None:
    if output is None:
        sys.stdout.write(data.decode())
        return
    try:
        atomic_write(output, data, mode=mode)
    except OSError as exc:
        raise CliUsageError(f"cannot write {output}: {exc.strerror or exc}") from None
    sys.stderr.write(f"wrote {what} to {output}\n")


@app.command(
    "keygen",
    help=(
        "Make an Ed25519 key pair, an approver's or a member's enrolment key: NAME.key (private, 0600) and NAME.pub.pem"
        " (for the policy: approvals.approvers or the member's enrolment_key)."
    ),
)
def keygen(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Approver or member name (file prefix).", show_default=False)],
    directory: Annotated[Path, typer.Option("--dir", "-d", metavar="DIR", help="Where to write the files.")] = Path(),
) -> None:
    from fedattest.policy.approval import generate_key, private_key_pem, public_key_pem  # noqa: PLC0415

    key_path, pub_path = directory / f"{name}.key", directory / f"{name}.pub.pem"
    if key_path.exists():
        raise CliUsageError(f"{key_path} exists: refusing to overwrite a key")
    key = generate_key()
    _write(key_path, private_key_pem(key), "private key", mode=0o600)
    _write(pub_path, public_key_pem(key.public_key()).encode(), "public key")


@app.command(
    "init",
    help=(
        "Write a policy to start from, with every section explained. Edit it, then 'policy check'.\n\n"
        "--simulated writes a test federation for the simulated TEE that works as written with fedattest's"
        " launchers (their simulated measurements, simulation allowed, [training] set); with -o, the approver's"
        " and the members' keys that no --approver / --enrolment-key gives are made next to it (NAME.key and"
        " NAME.pub.pem, as 'policy keygen' makes them).\n\n"
        "Examples:\n\n  fedattest policy init --simulated -o fed/policy.toml --commitment hospital-a=$(fedattest data commit"
        " data/ --root-only)\n\n  fedattest policy init --approver alice=alice.pub.pem -o policy.toml"
    ),
)
def init(  # noqa: PLR0917 - typer maps parameters to options
    name: Annotated[str, typer.Option("--name", help="Federation name.")] = "my-federation",
    approver: Annotated[
        list[str] | None, typer.Option("--approver", metavar="NAME=PUB.pem", help="An approver and its public key; repeatable.")
    ] = None,
    required: Annotated[int | None, typer.Option("--required", min=1, help="Approvals required (default: all).")] = None,
    enrolment_key: Annotated[
        list[str] | None,
        typer.Option("--enrolment-key", metavar="MEMBER=PUB.pem", help="A template member's enrolment public key; repeatable."),
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", metavar="FILE", help="Write here (default stdout).")] = None,
    simulated: Annotated[
        bool, typer.Option("--simulated", help="A test federation for the simulated TEE, working as written (see above).")
    ] = False,
    commitment: Annotated[
        list[str] | None,
        typer.Option("--commitment", metavar="MEMBER=HEX", help="A collaborator's data commitment ('fedattest data commit')."),
    ] = None,
) -> None:
    approvers = [(who, pem) for who, pem in _named_keys(approver, "--approver", "approver public key")]
    members = dict(_named_keys(enrolment_key, "--enrolment-key", "enrolment public key"))
    commitments: dict[str, str] = {}
    for item in commitment or []:
        member, sep, value = item.partition("=")
        if not sep or member not in TEMPLATE_MEMBERS[1:] or not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raise CliUsageError(
                f"--commitment {item!r}: expected {TEMPLATE_MEMBERS[1]}=<64 hex digits> (from 'fedattest data commit')"
            )
        commitments[member] = value.lower()
    for member in members:
        if member not in TEMPLATE_MEMBERS:
            raise CliUsageError(
                f"--enrolment-key {member}: the template's members are {' and '.join(TEMPLATE_MEMBERS)};"
                " add other members' keys to the file"
            )
    if output is not None and output.exists():
        raise CliUsageError(f"{output} exists: refusing to overwrite a policy")
    if simulated and output is not None:  # keys nobody gave: made next to the policy, so it works as written
        missing = [m for m in TEMPLATE_MEMBERS if m not in members]
        made = _make_missing_keys(output.parent, ["alice"] if not approvers else [], missing)
        approvers = approvers or [("alice", made["alice"])]
        members |= {m: pem for m, pem in made.items() if m in TEMPLATE_MEMBERS}
    text = policy_template(name, approvers, required, members, simulated=simulated, commitments=commitments)
    _write(output, text.encode(), "policy")


def _make_missing_keys(directory: Path, approvers: list[str], members: list[str]) -> dict[str, str]:
    """NAME.key (0600) and NAME.pub.pem in ``directory`` for each name; returns name -> public key PEM. Refuses
    to overwrite a key."""
    from fedattest.policy.approval import generate_key, private_key_pem, public_key_pem  # noqa: PLC0415

    names = [*approvers, *members]
    for name in names:
        if (directory / f"{name}.key").exists():
            raise CliUsageError(f"{directory / f'{name}.key'} exists: give its public key with --approver or --enrolment-key")
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in names:
        key = generate_key()
        _write(directory / f"{name}.key", private_key_pem(key), "private key", mode=0o600)
        out[name] = public_key_pem(key.public_key())
        _write(directory / f"{name}.pub.pem", out[name].encode(), "public key")
    return out


def _named_keys(items: list[str] | None, option: str, what: str) -> list[tuple[str, str]]:
    """``NAME=FILE`` options as (name, file text)."""
    out = []
    for item in items or []:
        who, sep, path = item.partition("=")
        if not sep or not who or not path:
            raise CliUsageError(f"{option} needs NAME=PUBLIC_KEY_FILE, got {item!r}")
        out.append((who, read_input(path, what).decode("utf-8", "replace")))
    return out


def _summary(policy: FederationPolicy) -> dict[str, Any]:
    return {
        "name": policy.name,
        "policy_hash": policy.policy_hash().hex(),
        "members": [{"name": m.name, "role": m.role} for m in policy.members],
        "attestation_required": {role: r.attestation_required for role, r in sorted(policy.roles.items())},
        "simulation_allowed": {
            "coordinator": policy.coordinator.allow_simulation,
            **{role: bool(r.reference and r.reference.allow_simulation) for role, r in sorted(policy.roles.items())},
        },
        "approvals_required": policy.approvals.required,
        "approvers": [a.name for a in policy.approvals.approvers],
    }


@app.command(
    "check",
    help=(
        "Validate a policy (schema errors name the key). With --approval files, also check the approvals:"
        " exit 1 unless enough valid ones are given.\n\nExample: fedattest policy check policy.toml --approval a.json"
    ),
)
def check(
    policy_path: PolicyArg,
    approval: Annotated[list[Path] | None, typer.Option("--approval", metavar="FILE", help="Approval file; repeatable.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    policy = load_policy(policy_path)
    summary = _summary(policy)
    result = None
    if approval:
        from fedattest.policy.approval import Approval, check_approvals  # noqa: PLC0415 - see the imports at the top

        try:
            approvals = [Approval.from_json(read_input(str(p), "approval file")) for p in approval]
            result = check_approvals(policy, approvals)
        except FedattestError as exc:
            raise CliUsageError(str(exc)) from None
        summary["approved"] = result.enough
        summary["approval_status"] = result.reason
    if json_out:
        print_json(summary)
    else:
        print(f"OK: policy {policy.name!r} is valid; hash {summary['policy_hash']}")
        if result is not None:
            print(("APPROVED: " if result.enough else "NOT APPROVED: ") + result.reason)
    if result is not None and not result.enough:
        raise CliError(f"{policy_path}: not approved: {result.reason}", EXIT_REJECTED)


@app.command(
    "add-app",
    help=(
        "Add a Flower app to the policy's [apps] allowed_hashes (editing the file in place, comments kept) and print"
        " the new policy hash. APP is an app directory (hashed as 'flwr run DIR' builds it), a .fab file or a"
        " 64-hex-digit hash. The new version then needs its approvals, and 'fedattest coordinator update-policy' to"
        " take force; running participants re-provision without a new activation.\n\n"
        "Example: fedattest policy add-app policy.toml ./my-app && fedattest policy approve policy.toml --name alice"
        " --key alice.key -o alice.approval.json"
    ),
)
def add_app(
    policy_path: PolicyArg,
    app_ref: Annotated[str, typer.Argument(metavar="APP", help="App directory, .fab file or SHA-256.", show_default=False)],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", metavar="FILE", help="Write the new policy here instead of in place.")
    ] = None,
) -> None:
    from fedattest.policy.edit import with_app_hash  # noqa: PLC0415 - tomlkit, only here

    policy = load_policy(policy_path)  # the file is a valid policy before it is touched
    if re.fullmatch(r"[0-9a-fA-F]{64}", app_ref):
        digest = app_ref.lower()
    else:
        from fedattest.flower.apps import app_hash  # noqa: PLC0415 - builds with Flower's CLI

        if not Path(app_ref).exists():
            raise CliUsageError(f"{app_ref}: not an app directory, a .fab file or a SHA-256 (64 hex digits)")
        try:
            digest = app_hash(Path(app_ref))
        except FedattestError as exc:
            raise CliUsageError(str(exc)) from None
    if any(h.hex() == digest for h in policy.apps.allowed_hashes):
        print(f"UNCHANGED: app {digest} is already allowed; policy hash {policy.policy_hash().hex()}")
        return
    text = read_input(str(policy_path), "policy file").decode("utf-8", "replace")
    try:
        new_text, updated = with_app_hash(text, digest)
    except FedattestError as exc:
        raise CliUsageError(f"{policy_path}: {exc}") from None
    target = output or policy_path
    try:
        atomic_write(target, new_text.encode(), mode=0o644)
    except OSError as exc:
        raise CliUsageError(f"cannot write {target}: {exc.strerror or exc}") from None
    print(f"ADDED: app {digest}; policy hash {policy.policy_hash().hex()} -> {updated.policy_hash().hex()}")
    sys.stderr.write(f"wrote {target}: approve the new version, then 'fedattest coordinator update-policy'\n")


@app.command("hash", help="Print the policy hash (SHA-256 over its canonical bytes): what approvers sign and quotes bind.")
def hash_(policy_path: PolicyArg) -> None:
    print(load_policy(policy_path).policy_hash().hex())


@app.command(
    "approve",
    help="Sign the policy hash as an approver.\n\nExample: fedattest policy approve policy.toml --name alice --key alice.key",
)
def approve_cmd(
    policy_path: PolicyArg,
    name: Annotated[str, typer.Option("--name", help="Your approver name, as the policy lists it.")],
    key: Annotated[Path, typer.Option("--key", metavar="FILE", help="Your Ed25519 private key (policy keygen).")],
    output: Annotated[Path | None, typer.Option("--output", "-o", metavar="FILE", help="Write here (default stdout).")] = None,
) -> None:
    from fedattest.policy.approval import approve, load_private_key  # noqa: PLC0415 - see the imports at the top

    policy = load_policy(policy_path)
    try:
        signed = approve(policy, name, load_private_key(read_input(str(key), "key file")))
    except FedattestError as exc:
        raise CliUsageError(str(exc)) from None
    _write(output, signed.to_json().encode(), "approval")


@app.command("show", help="Show the policy: members, roles, reference values, DP, apps, approvers.")
def show(policy_path: PolicyArg, json_out: Annotated[bool, typer.Option("--json", help="The canonical JSON.")] = False) -> None:
    from rich.table import Table  # noqa: PLC0415 - see the imports at the top

    policy = load_policy(policy_path)
    if json_out:
        print_json(json.loads(policy.canonical_bytes()))
        return
    table = Table(title=f"policy {policy.name} ({policy.policy_hash().hex()[:16]}...)", show_header=True)
    for column in ("member", "role", "data commitment", "dns names", "max activations"):
        table.add_column(column)
    for m in policy.members:
        table.add_row(
            m.name,
            m.role,
            m.data_commitment.hex() if m.data_commitment else "-",
            ", ".join(m.dns_names) or "-",
            str(m.max_activations),
        )
    print_rich(table)
    for role, r in sorted(policy.roles.items()):
        print(f"{role}: attestation {'required' if r.attestation_required else 'OFF'}")
    d = policy.dp
    print(
        f"dp: noise {d.noise_multiplier}, clipping {d.clipping_norm}, sampled clients {d.sampled_clients}, delta {d.target_delta}"
    )
    print(f"approvals: {policy.approvals.required} of {', '.join(a.name for a in policy.approvals.approvers)}")
