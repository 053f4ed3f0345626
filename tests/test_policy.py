"""The federation policy: schema errors name the key, the hash is canonical, approvals count only when
they are valid signatures over this exact policy by its listed approvers."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedattest.cli import app
from fedattest.policy.approval import (
    Approval,
    approve,
    check_approvals,
    generate_key,
    private_key_pem,
    public_key_pem,
)
from fedattest.policy.federation import PolicyError, parse_policy
from fedattest.policy.template import policy_template
from tests.conftest import assert_one_line_error

KEYS = {name: generate_key() for name in ("alice", "bob", "carol", "aggregator", "hospital-a")}
MEMBER_KEYS = {name: public_key_pem(KEYS[name].public_key()) for name in ("aggregator", "hospital-a")}
runner = CliRunner()
NO_AGGREGATOR = 'role = "collaborator"\ndata_commitment = "' + "11" * 32 + '"'
ONLY_COLLABORATORS = r"\1" + NO_AGGREGATOR + "\n"  # the aggregator made a collaborator, keeping its enrolment key


def template(required: int = 2, names: tuple[str, ...] = ("alice", "bob", "carol")) -> str:
    return policy_template("hospitals", [(n, public_key_pem(KEYS[n].public_key())) for n in names], required, MEMBER_KEYS)


def test_the_template_is_a_valid_policy() -> None:
    policy = parse_policy(template())
    assert policy.name == "hospitals" and policy.approvals.required == 2
    assert [m.role for m in policy.members] == ["aggregator", "collaborator"]
    assert policy.roles["collaborator"].reference is not None
    assert policy.member("hospital-a") is not None and policy.member("nobody") is None


def test_every_member_needs_an_ed25519_enrolment_key() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()  # fmt: skip
    pem = MEMBER_KEYS["hospital-a"].strip()
    cases = {
        "": "members[1].enrolment_key: missing",
        "enrolment_key = \"PASTE it here\"": "members[1].enrolment_key: not a PEM public key: run 'fedattest policy keygen",
        f'enrolment_key = """\n{ec_pem}"""': "members[1].enrolment_key: must be an Ed25519 public key",
        "enrolment_key = 7": "members[1].enrolment_key: expected the PEM text of an Ed25519 public key",
    }
    for replacement, error in cases.items():
        text = template().replace(f'enrolment_key = """\n{pem}\n"""\n', replacement + ("\n" if replacement else ""))
        assert text != template()
        with pytest.raises(PolicyError) as caught:
            parse_policy(text)
        assert str(caught.value).startswith(error), str(caught.value)
    # Without keys, the template says what to paste where.
    with pytest.raises(PolicyError, match=r"members\[0\].enrolment_key: not a PEM public key"):
        parse_policy(policy_template("hospitals", [("alice", MEMBER_KEYS["aggregator"])], 1))


def test_hash_ignores_formatting_order_comments_and_hex_case() -> None:
    text = template()
    reformatted = text.replace("# ", "#  ").replace("allow_debug = false\n", "") + "\n\n# trailing comment\n"
    reformatted = reformatted.replace('"' + "00" * 32 + '"', '"0x' + "00" * 32 + '"', 1)
    reordered = re.sub(r"(rejected_advisory_ids = \[\]\n)(allow_simulation = false.*\n)", r"\2\1", reformatted, count=1)
    assert parse_policy(reordered).policy_hash() == parse_policy(text).policy_hash()
    changed = text.replace("max_activations = 3", "max_activations = 4")
    assert parse_policy(changed).policy_hash() != parse_policy(text).policy_hash()


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda t: t.replace('name = "hospitals"', 'name = "Hospitals!"'), "name: lower-case"),
        (lambda t: t.replace("version = 1", "version = 2"), "version"),
        (lambda t: t.replace("[dp]\nnoise_multiplier = 1.0", "[dp]\nnoise_multiplier = 0"), "dp.noise_multiplier"),
        (lambda t: t.replace("target_delta = 1e-5", "target_delta = 1.5"), "dp.target_delta"),
        (lambda t: t.replace("[dp]\n", "[dp]\nepsilon = 3\n"), "dp.epsilon: unknown key"),
        (lambda t: t.replace('data_commitment = "' + "00" * 32 + '"', 'data_commitment = "abc"'), "members[1].data_commitment"),
        (lambda t: re.sub(r'data_commitment = "0+".*\n', "", t), "needs a data_commitment"),
        (lambda t: re.sub(r'role = "aggregator"\n(enrolment_key = """[^"]*"""\n)dns_names = .*\n', ONLY_COLLABORATORS, t),
         "exactly one member"),
        (lambda t: t.replace('name = "hospital-a"', 'name = "aggregator"'), "member names must be unique"),
        (lambda t: t.replace('"aggregator.example.org", "localhost"', '"Bad_Name"'), "valid lower-case DNS"),
        (lambda t: t.replace("required = 2", "required = 4"), "only 3 approvers"),
        (lambda t: t.replace("[roles.collaborator]\n", "[roles.collaborator]\naccept_any_code = true\n"), "accept_any_code"),
        (
            lambda t: t.replace("[roles.aggregator]\nattestation_required = true\nmrenclave", "[roles.aggregator]\nxmrenclave"),
            "roles.aggregator",
        ),
        (lambda t: t.replace("min_isv_svn = 2", "min_isv_svn = 70000"), "roles.collaborator.min_isv_svn"),
        (lambda t: t.replace('allowed_hashes = ["' + "00" * 32 + '"]', "allowed_hashes = []"), "apps.allowed_hashes"),
        (lambda t: t + "\n[extra]\nx = 1\n", "extra: unknown key"),
        (lambda t: "version = = 1", "not valid TOML"),
    ],
)
def test_schema_errors_name_the_key(edit: object, needle: str) -> None:
    with pytest.raises(PolicyError, match=re.escape(needle)):
        parse_policy(edit(template()))  # type: ignore[operator]


def test_attestation_can_be_turned_off_per_role_but_is_then_visible() -> None:
    text = template().replace(
        "[roles.collaborator]\nattestation_required = true", "[roles.collaborator]\nattestation_required = false"
    )
    policy = parse_policy(text)
    assert not policy.roles["collaborator"].attestation_required
    assert policy.policy_hash() != parse_policy(template()).policy_hash()
    bare = re.sub(
        r"\[roles\.aggregator\]\nattestation_required = true\n.*?\n\n",
        "[roles.aggregator]\nattestation_required = false\n\n",
        text,
        flags=re.S,
    )
    assert parse_policy(bare).roles["aggregator"].reference is None


def test_approvals() -> None:
    policy = parse_policy(template())
    a, b = approve(policy, "alice", KEYS["alice"]), approve(policy, "bob", KEYS["bob"])
    assert check_approvals(policy, [a]).enough is False
    result = check_approvals(policy, [a, b])
    assert result.enough and result.valid == ("alice", "bob")
    # Round trip through the file format.
    assert Approval.from_json(a.to_json()) == a
    # Each way an approval can fail to count.
    other = parse_policy(template().replace("max_activations = 3", "max_activations = 5"))
    stale = approve(other, "carol", KEYS["carol"])
    forged = replace(b, approver="carol")
    broken = replace(a, signature=bytes(64))
    outsider = Approval(policy.name, policy.policy_hash(), "mallory", b"x" * 64)
    check = check_approvals(policy, [a, a, stale, forged, broken, outsider])
    assert check.valid == ("alice",) and not check.enough
    joined = " | ".join(check.problems)
    for needle in (
        "approved twice",
        "approved another version",
        "'carol': signature does not verify",
        "'mallory' is not an approver",
    ):
        assert needle in joined, joined


def test_approving_needs_the_listed_key() -> None:
    policy = parse_policy(template())
    with pytest.raises(PolicyError, match="not the one the policy lists"):
        approve(policy, "alice", KEYS["bob"])
    with pytest.raises(PolicyError, match="not an approver"):
        approve(policy, "mallory", KEYS["alice"])


@pytest.mark.parametrize("text", ["{}", '{"format": "fedattest-policy-approval", "version": 1}', "not json", '{"format": "x"}'])
def test_bad_approval_files(text: str) -> None:
    with pytest.raises(PolicyError, match="approval"):
        Approval.from_json(text)


def test_cli_flow(tmp_path: Path) -> None:
    for name in ("alice", "bob"):
        result = runner.invoke(app, ["policy", "keygen", name, "--dir", str(tmp_path)])
        assert result.exit_code == 0, result.stderr
    assert (tmp_path / "alice.key").stat().st_mode & 0o777 == 0o600
    assert_one_line_error(runner.invoke(app, ["policy", "keygen", "alice", "--dir", str(tmp_path)]), 2, "refusing to overwrite")
    policy = tmp_path / "policy.toml"
    args = [
        "policy",
        "init",
        "--approver",
        f"alice={tmp_path / 'alice.pub.pem'}",
        "--approver",
        f"bob={tmp_path / 'bob.pub.pem'}",
    ]
    placeholders = tmp_path / "placeholders.toml"
    assert runner.invoke(app, [*args, "-o", str(placeholders)]).exit_code == 0
    unfilled = runner.invoke(app, ["policy", "check", str(placeholders)])
    assert_one_line_error(unfilled, 2, "members[0].enrolment_key: not a PEM public key")
    for name in ("aggregator", "hospital-a"):
        assert runner.invoke(app, ["policy", "keygen", name, "--dir", str(tmp_path)]).exit_code == 0
        args += ["--enrolment-key", f"{name}={tmp_path / f'{name}.pub.pem'}"]
    unknown = runner.invoke(app, [*args, "--enrolment-key", f"hospital-z={tmp_path / 'alice.pub.pem'}", "-o", str(policy)])
    assert_one_line_error(unknown, 2, "--enrolment-key hospital-z: the template's members are aggregator and hospital-a")
    assert runner.invoke(app, [*args, "-o", str(policy)]).exit_code == 0
    ok = runner.invoke(app, ["policy", "check", str(policy), "--json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["approvals_required"] == 2
    digest = runner.invoke(app, ["policy", "hash", str(policy)]).stdout.strip()
    assert digest == json.loads(ok.stdout)["policy_hash"]
    approvals = []
    for name in ("alice", "bob"):
        out = tmp_path / f"{name}.json"
        result = runner.invoke(
            app, ["policy", "approve", str(policy), "--name", name, "--key", str(tmp_path / f"{name}.key"), "-o", str(out)]
        )
        assert result.exit_code == 0, result.stderr
        approvals += ["--approval", str(out)]
    assert_one_line_error(runner.invoke(app, ["policy", "check", str(policy), *approvals[:2]]), 1, "not approved")
    approved = runner.invoke(app, ["policy", "check", str(policy), *approvals])
    assert approved.exit_code == 0 and "APPROVED: approved by alice, bob" in approved.stdout
    show = runner.invoke(app, ["policy", "show", str(policy), "--json"])
    assert show.exit_code == 0 and json.loads(show.stdout)["name"] == "my-federation"
    wrong_key = runner.invoke(app, ["policy", "approve", str(policy), "--name", "alice", "--key", str(tmp_path / "bob.key")])
    assert_one_line_error(wrong_key, 2, "not the one the policy lists")
    broken = tmp_path / "broken.toml"
    broken.write_text(policy.read_text().replace("[dp]\n", "[dp]\nepsilon = 1\n"))
    assert_one_line_error(runner.invoke(app, ["policy", "check", str(broken)]), 2, "dp.epsilon: unknown key")
    assert_one_line_error(runner.invoke(app, [*args, "-o", str(policy)]), 2, "refusing to overwrite")
    assert_one_line_error(runner.invoke(app, ["policy", "init", "--approver", "alice"]), 2, "NAME=PUBLIC_KEY_FILE")


def test_private_key_round_trip() -> None:
    from fedattest.policy.approval import load_private_key

    key = KEYS["alice"]
    assert load_private_key(private_key_pem(key)).public_key().public_bytes_raw() == key.public_key().public_bytes_raw()
    with pytest.raises(PolicyError, match="Ed25519"):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        load_private_key(
            ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
