"""The Flower building blocks that need no Flower process: the app allow-list, signed updates, and the
provisioned data commitment and DP settings."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from fedattest.data import DataIntegrityError, commit_directory
from fedattest.errors import FedattestError
from fedattest.flower import (
    AppGate,
    AppNotAllowedError,
    UpdateSigner,
    UpdateVerifier,
    fab_hash,
    load_provisioned,
    open_committed,
)
from fedattest.flower.provisioned import Provisioned, ProvisioningError
from fedattest.pki import identity as ident
from fedattest.pki.names import MEMBER_URI
from fedattest.pki.signing import UpdateRejectedError

NOW = ident.utcnow()
ROOT_KEY = ident.new_key()
ROOT = ident.make_root_ca(ROOT_KEY, "hospitals", NOW)


def member_identity(
    name: str, federation: str = "hospitals", lifetime: timedelta = timedelta(days=1), root_key=ROOT_KEY, root=ROOT
) -> UpdateSigner:  # type: ignore[no-untyped-def]
    key = ident.new_key()
    cert = ident.issue_leaf(
        ca_key=root_key, ca=root, public_key=key.public_key(), common_name=name,
        uris=[MEMBER_URI.format(federation=federation, member=name)], dns_names=[], ips=[], now=NOW, lifetime=lifetime,
    )  # fmt: skip
    fmt = serialization.PrivateFormat.PKCS8
    return UpdateSigner(
        key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()),
        cert.public_bytes(serialization.Encoding.PEM),
    )


def test_app_gate() -> None:
    fab = b"PK\x03\x04 an approved flower app"
    gate = AppGate([fab_hash(fab).upper()])
    assert gate.check(fab) == hashlib.sha256(fab).hexdigest()
    with pytest.raises(AppNotAllowedError, match="is not in the allowed apps") as err:
        gate.check(fab + b"\x00")
    assert err.value.digest == hashlib.sha256(fab + b"\x00").hexdigest()
    with pytest.raises(FedattestError, match="no allowed Flower apps"):
        AppGate([])


def test_signed_updates_are_accepted_from_members_only() -> None:
    alice = member_identity("hospital-a")
    verifier = UpdateVerifier(ROOT, "hospitals")
    update = b"\x00\x01 model weights"
    signature = alice.sign(7, "msg-1", update)
    assert verifier.verify(alice.certificate_pem, signature, 7, "msg-1", update) == "hospital-a"
    cases = {
        "changed": (alice.certificate_pem, signature, 7, "msg-1", update + b"!"),
        "other run": (alice.certificate_pem, signature, 8, "msg-1", update),
        "other message": (alice.certificate_pem, signature, 7, "msg-2", update),
        "another member's certificate": (member_identity("hospital-b").certificate_pem, signature, 7, "msg-1", update),
    }
    for case, args in cases.items():
        with pytest.raises(UpdateRejectedError, match="signature does not verify"):
            verifier.verify(*args)
        assert case
    outsider_key = ident.new_key()
    outsider_root = ident.make_root_ca(outsider_key, "hospitals", NOW)
    mallory = member_identity("mallory", root_key=outsider_key, root=outsider_root)
    with pytest.raises(UpdateRejectedError, match="not issued by the coordinator"):
        verifier.verify(mallory.certificate_pem, mallory.sign(7, "m", update), 7, "m", update)
    other_federation = member_identity("hospital-a", federation="elsewhere")
    with pytest.raises(UpdateRejectedError, match="not for a member of this federation"):
        verifier.verify(other_federation.certificate_pem, other_federation.sign(7, "m", update), 7, "m", update)
    with pytest.raises(UpdateRejectedError, match="expired"):
        verifier.verify(alice.certificate_pem, signature, 7, "msg-1", update, at=datetime.now(UTC) + timedelta(days=3))
    with pytest.raises(UpdateRejectedError, match="does not parse"):
        verifier.verify(b"junk", signature, 7, "msg-1", update)


def provisioned(commitment: str | None) -> dict[str, object]:
    return {
        "federation": "hospitals", "role": "collaborator" if commitment else "aggregator", "policy_hash": "00" * 32,
        "data_commitment": commitment,
        "dp": {"noise_multiplier": 1.0, "clipping_norm": 1.0, "sampled_clients": 2, "target_delta": 1e-5},
        "allowed_app_hashes": ["11" * 32], "member_secret": "22" * 32,
    }  # fmt: skip


def test_committed_dataset_from_provisioned_parameters(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.bin").write_bytes(b"training data" * 1000)
    root = commit_directory(data, chunk_size=4096)[0].root.hex()
    (tmp_path / "id").mkdir()
    (tmp_path / "id" / "provisioned.json").write_text(json.dumps(provisioned(root)))
    params = load_provisioned(tmp_path / "id")
    assert params.dp.sampled_clients == 2 and params.allowed_app_hashes == ("11" * 32,)
    assert open_committed(params, data).read_bytes("x.bin") == b"training data" * 1000
    (data / "x.bin").write_bytes(b"swapped data!" * 1000)
    with pytest.raises(DataIntegrityError):
        open_committed(params, data).read_bytes("x.bin")
    aggregator = Provisioned.from_json(json.dumps(provisioned(None)))
    with pytest.raises(ProvisioningError, match="refusing to train"):
        open_committed(aggregator, data)
    with pytest.raises(ProvisioningError, match="activate with the coordinator first"):
        load_provisioned(tmp_path / "nowhere")
    with pytest.raises(ProvisioningError, match="malformed"):
        Provisioned.from_json('{"federation": "x"}')
    bad_dp = provisioned(None)
    bad_dp["dp"] = {"noise_multiplier": -1.0, "clipping_norm": 1.0, "sampled_clients": 2, "target_delta": 1e-5}
    with pytest.raises(ProvisioningError, match="DP settings are malformed"):
        _ = Provisioned.from_json(json.dumps(bad_dp)).dp
    with pytest.raises(ProvisioningError, match="malformed"):
        Provisioned.from_json(json.dumps(provisioned(None) | {"dp": 3}))


class FakeContext:
    """The attribute of flwr.app.Context the helpers read."""

    def __init__(self, node_config: dict[str, str]) -> None:
        self.node_config = node_config


def test_apps_get_their_data_and_dp_from_the_provisioned_parameters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.app import Context
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg

    from fedattest.flower import committed_dataset, dp_strategy

    data = tmp_path / "data"
    data.mkdir()
    (data / "x.npy").write_bytes(b"\x93NUMPY" + bytes(100))
    root = commit_directory(data, chunk_size=4096)[0].root.hex()
    identity = tmp_path / "id"
    identity.mkdir()
    (identity / "provisioned.json").write_text(json.dumps(provisioned(root)))
    client_context = Context(
        run_id=1,
        node_id=2,
        node_config={"fedattest-identity-dir": str(identity), "data-dir": str(data)},
        state=__import__("flwr").app.RecordDict(),
        run_config={},
    )
    assert committed_dataset(client_context).files() == ["x.npy"]
    with pytest.raises(ProvisioningError, match="no data directory"):
        committed_dataset(FakeContext({"fedattest-identity-dir": str(identity)}))
    monkeypatch.delenv("FEDATTEST_IDENTITY_DIR", raising=False)
    server_context = FakeContext({})  # a ServerApp's node_config is empty
    plain = FedAvg()
    assert dp_strategy(plain, server_context) is plain  # not attested (Flower's simulation engine): steps aside
    monkeypatch.setenv("FEDATTEST_IDENTITY_DIR", str(identity))
    wrapped = dp_strategy(FedAvg(), server_context)
    assert isinstance(wrapped, DifferentialPrivacyServerSideFixedClipping)
    assert (wrapped.noise_multiplier, wrapped.clipping_norm, wrapped.num_sampled_clients) == (1.0, 1.0, 2)


def test_the_signing_mod_and_the_serverapp_check(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from fedattest.flower.mods import SIGNATURE_RECORD, keep_attested, signing_mod, verify_reply

    for name, value in (("_run_id", 7), ("_node_id", 0), ("_task_id", 1)):  # what a Flower process sets
        monkeypatch.setattr(TaskIdentity, name, value)
    alice = member_identity("hospital-a")
    verifier = UpdateVerifier(ROOT, "hospitals")
    instruction = Message(RecordDict({"arrays": ArrayRecord([np.zeros(4)])}), dst_node_id=5, message_type="train")

    def train(message: Message, context: object) -> Message:
        return Message(
            RecordDict({"arrays": ArrayRecord([np.arange(4.0)]), "metrics": ConfigRecord({"n": 10})}), reply_to=message
        )

    signed = signing_mod(alice)(instruction, None, train)
    assert SIGNATURE_RECORD in signed.content and verify_reply(signed, verifier) == "hospital-a"
    unsigned = train(instruction, None)
    tampered = signing_mod(alice)(instruction, None, train)
    tampered.content["arrays"] = ArrayRecord([np.arange(4.0) * 100])  # a poisoned update under a valid signature
    mallory_key = ident.new_key()
    mallory = member_identity("mallory", root_key=mallory_key, root=ident.make_root_ca(mallory_key, "hospitals", NOW))
    foreign = signing_mod(mallory)(instruction, None, train)
    with caplog.at_level("WARNING", logger="fedattest.flower"):
        kept = keep_attested([signed, unsigned, tampered, foreign], verifier)
    assert kept == [signed]
    reasons = " | ".join(r.getMessage() for r in caplog.records)
    for needle in ("not signed", "signature does not verify", "not issued by the coordinator"):
        assert needle in reasons, reasons


def test_a_role_with_attestation_off_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Staged roll-out: the policy turns attestation off for collaborators. The collaborator still activates,
    and its provisioned parameters, its token and the launcher's log all say attestation is off."""
    import jwt

    from fedattest.flower.participant import activate_participant
    from fedattest.policy.approval import approve
    from fedattest.policy.federation import parse_policy
    from fedattest.tee import SimulatedPlatform
    from tests.coordinator_harness import COLLAB, ENROL, KEY, policy_text, start, stop, tee

    on = "[roles.collaborator]\nattestation_required = true"
    assert on in policy_text()
    text = policy_text().replace(on, "[roles.collaborator]\nattestation_required = false")
    (tmp_path / "policy.toml").write_text(text)
    (tmp_path / "alice.json").write_text(approve(parse_policy(text), "alice", KEY).to_json())
    running = start(tmp_path, SimulatedPlatform.create(tmp_path / "platform"))
    try:
        with caplog.at_level("WARNING", logger="fedattest"):
            who = activate_participant(running.url, running.root_pem, "hospital-a", tee(running, COLLAB), tmp_path / "a",
                                       node_key=True, expected_role="collaborator",
                                       enrolment_key=lambda: ENROL["hospital-a"])  # fmt: skip
    finally:
        stop(running)
    assert who.provisioned.attestation == "off"
    assert "ATTESTATION OFF: the policy does not require attestation for role 'collaborator'" in caplog.text
    claims = jwt.decode((tmp_path / "a" / "token.jwt").read_text(), options={"verify_signature": False})
    assert claims["attestation"] == "off"


def test_a_reply_signature_covers_its_run_round_type_and_instruction() -> None:
    alice = member_identity("hospital-a")
    verifier = UpdateVerifier(ROOT, "hospitals")
    signed = (7, "2", "train", "instruction-1", b"\x00\x01 model weights")
    signature = alice.sign_reply(*signed)
    assert verifier.verify_reply(alice.certificate_pem, signature, *signed) == "hospital-a"
    for i, other in enumerate((8, "1", "evaluate", "instruction-2", b"\x00\x01 model weights!")):
        changed = (*signed[:i], other, *signed[i + 1 :])
        with pytest.raises(UpdateRejectedError, match="signature does not verify"):
            verifier.verify_reply(alice.certificate_pem, signature, *changed)
    # Domain separation: a reply signature is not a round report's, nor the other way round.
    with pytest.raises(UpdateRejectedError, match="signature does not verify"):
        verifier.verify(alice.certificate_pem, signature, 7, "instruction-1", signed[4])
    with pytest.raises(UpdateRejectedError, match="signature does not verify"):
        verifier.verify_reply(alice.certificate_pem, alice.sign(7, "round-2", b"r"), 7, "2", "train", "round-2", b"r")


def test_the_clientapp_process_signs_replies_the_app_did_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ClientApp without attested_signing_mod: in the gated flwr-clientapp process the app Flower loads is
    wrapped, so its replies are signed with the collaborator's attested key all the same."""
    import numpy as np
    from flwr.app import ArrayRecord, Context, Message, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.supercore.task_identity import TaskIdentity
    from flwr.supernode.runtime import run_clientapp

    from fedattest.flower.context import IDENTITY_KEY
    from fedattest.flower.mods import enforce_reply_signing, verify_reply

    for name, value in (("_run_id", 7), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)
    signer = member_identity("hospital-a")
    identity = tmp_path / "identity"
    identity.mkdir()
    fmt = serialization.PrivateFormat.PKCS8
    (identity / "key.pem").write_bytes(signer._key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()))
    (identity / "chain.pem").write_bytes(signer.certificate_pem)
    app = ClientApp()  # no mods

    @app.train()
    def train(message: Message, context: Context) -> Message:
        return Message(RecordDict({"arrays": ArrayRecord([np.arange(3.0)])}), reply_to=message)

    monkeypatch.setattr(run_clientapp, "get_load_client_app_fn", lambda *a, **k: lambda *a2, **k2: app)
    undo = enforce_reply_signing()
    try:
        loaded = run_clientapp.get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)("id", "1", "h")
        instruction = Message(RecordDict({"arrays": ArrayRecord([np.zeros(3)])}), dst_node_id=5, message_type="train")
        context = Context(run_id=7, node_id=5, node_config={IDENTITY_KEY: str(identity)}, state=RecordDict(), run_config={})
        reply = loaded(message=instruction, context=context)
    finally:
        undo()
    assert verify_reply(reply, UpdateVerifier(ROOT, "hospitals")) == "hospital-a"
    assert app(message=instruction, context=context).content.get("fedattest.signature") is None  # the app alone: unsigned


def test_outside_an_attested_participant_the_features_say_not_attested_and_step_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Flower's simulation engine or a plain SuperNode: no fedattest identity. The app runs as it is, each feature
    says "not attested" once; where an identity is configured but broken, it still refuses (never degrades)."""
    from flwr.app import ConfigRecord, RecordDict
    from flwr.serverapp.strategy import FedAvg

    from fedattest.flower import attested_signing_mod, attested_strategy, committed_dataset, dp_strategy, is_attested
    from fedattest.flower import context as flower_context

    monkeypatch.delenv("FEDATTEST_IDENTITY_DIR", raising=False)
    monkeypatch.setattr(flower_context, "_said", set())
    sim = FakeContext({"partition-id": 1, "num-partitions": 2})
    assert not is_attested(sim)
    strategy = FedAvg()
    assert dp_strategy(strategy, sim) is strategy and attested_strategy(strategy, sim) is strategy
    message, reply = object(), RecordDict({"config": ConfigRecord({"y": 2})})  # passed through untouched
    assert attested_signing_mod(message, sim, lambda _m, _c: reply) is reply and "fedattest.signature" not in reply
    site = tmp_path / "site-1"
    (site / "sub").mkdir(parents=True)
    (site / "sub" / "xy.npy").write_bytes(b"rows")
    data = committed_dataset(sim, default_dir=site)
    assert not data.checked and data.files() == ["sub/xy.npy"] and data.read_bytes("sub/xy.npy") == b"rows"
    with pytest.raises(ProvisioningError, match="outside the data directory"):
        data.read_bytes("../site-1/../../etc/passwd")
    assert committed_dataset(FakeContext({"data-dir": str(site)})).read_bytes("sub/xy.npy") == b"rows"  # data-dir first
    with pytest.raises(ProvisioningError, match="no data to read"):
        committed_dataset(sim)
    said = [r.getMessage() for r in caplog.records if "not attested" in r.getMessage()]
    features = ["attested_signing_mod", "attested_strategy", "committed_dataset", "dp_strategy"]
    assert sorted(m.split(":")[0] for m in said) == features
    # An identity configured but unusable is an error, not "not attested".
    broken = FakeContext({"fedattest-identity-dir": str(tmp_path / "missing"), "data-dir": str(site)})
    assert is_attested(broken)
    with pytest.raises(ProvisioningError):
        committed_dataset(broken, default_dir=site)
    with pytest.raises((ProvisioningError, FedattestError, OSError)):
        attested_signing_mod(message, broken, lambda _m, _c: reply)
