"""The privacy budget, enforced (issue 14, item 1): the policy's ``[privacy]`` budget, the coordinator's ledger
(a reservation before every release, recorded in the audit log, refused with what remains when it would overspend)
and ``audit verify`` recomputing it. The accountant is dp-accounting's; these tests check that we describe the
releases to it as the policy says and keep the rules, against a real coordinator over TLS."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest

from fedattest.errors import FedattestError
from fedattest.flower.rounds import report_round, reserve_round
from fedattest.participant import activate
from fedattest.policy.approval import approve
from fedattest.policy.dp import DpSettings, PrivacyBudget
from fedattest.policy.federation import parse_policy
from fedattest.policy.ledger import LAPLACE, SAMPLED_GAUSSIAN, LedgerError, Release, charge, spent, training_round
from fedattest.tee import SimulatedPlatform
from tests.coordinator_harness import AGG, COLLAB, ENROL, KEY, coordinator, policy_text, start, stop, tee

DELTA = 1e-5
DP = {"noise_multiplier": 1.0, "clipping_norm": 1.0, "sampled_clients": 1}


def test_a_release_costs_what_dp_accounting_says_for_it() -> None:
    import dp_accounting
    from dp_accounting.rdp import rdp_privacy_accountant

    round_ = training_round(DpSettings(noise_multiplier=1.1, clipping_norm=1.0, sampled_clients=3, target_delta=DELTA), 10)
    assert round_ == Release(SAMPLED_GAUSSIAN, 1.1, 3, 10)
    accountant = rdp_privacy_accountant.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    accountant.compose(dp_accounting.SampledWithoutReplacementDpEvent(10, 3, dp_accounting.GaussianDpEvent(1.1)), 5)
    assert spent([round_] * 5, DELTA) == pytest.approx(accountant.get_epsilon(DELTA), rel=1e-12)
    assert spent([], DELTA) == 0
    # More releases never spend less; sampling fewer members each round spends less per round.
    costs = [spent([round_] * k, DELTA) for k in range(1, 6)]
    assert costs == sorted(costs) and len(set(costs)) == 5
    assert spent([Release(SAMPLED_GAUSSIAN, 1.1, 2, 10)], DELTA) < spent([round_], DELTA)
    everyone = training_round(DpSettings(noise_multiplier=1.0, clipping_norm=1.0, sampled_clients=5, target_delta=DELTA), 3)
    assert (everyone.sample_size, everyone.population) == (3, 3)  # cannot sample more collaborators than there are
    assert spent([Release(LAPLACE, 2.0)], DELTA) == pytest.approx(0.5, rel=0.01)  # Laplace: ε is 1 / scale


def test_a_release_that_would_overspend_is_refused_with_what_remains() -> None:
    round_ = Release(SAMPLED_GAUSSIAN, 1.0, 1, 3)
    one = spent([round_], DELTA)
    budget = PrivacyBudget(epsilon=spent([round_] * 3, DELTA) + 1e-9, delta=DELTA)
    assert charge(budget, [round_, round_], round_).fits
    refused = charge(budget, [round_] * 3, round_)
    assert not refused.fits and refused.epsilon_after > budget.epsilon
    assert "remains after 3 releases" in refused.reason and f"of the budget {budget.epsilon:g}" in refused.reason
    assert charge(PrivacyBudget(epsilon=one / 2, delta=DELTA), [], round_).fits is False  # even the first


@pytest.mark.parametrize(("doc", "needle"), [
    ({"mechanism": "gaussian", "noise_multiplier": 1.0}, "unknown mechanism"),
    ({"mechanism": "exponential", "noise_multiplier": 1.0}, "unknown mechanism"),
    ({"mechanism": LAPLACE, "noise_multiplier": 1.0, "extra": 1}, "exactly"),
    ({"mechanism": SAMPLED_GAUSSIAN, "noise_multiplier": 1.0, "sample_size": 1}, "exactly"),
    ({"mechanism": LAPLACE, "noise_multiplier": True}, "is a number"),
    ({"mechanism": LAPLACE, "noise_multiplier": "1"}, "is a number"),
    ({"mechanism": SAMPLED_GAUSSIAN, "noise_multiplier": 1.0, "sample_size": 1.0, "population": 3}, "integers"),
    ({"mechanism": SAMPLED_GAUSSIAN, "noise_multiplier": 1.0, "sample_size": 4, "population": 3}, "sample_size <= population"),
    ({"mechanism": SAMPLED_GAUSSIAN, "noise_multiplier": 1.0, "sample_size": 0, "population": 3}, "sample_size <= population"),
    ({"mechanism": LAPLACE, "noise_multiplier": float("nan")}, "finite number"),
    ({"mechanism": LAPLACE, "noise_multiplier": 0.0}, "finite number"),
    ([], "a JSON object"),
])  # fmt: skip
def test_a_release_is_parsed_strictly(doc: object, needle: str) -> None:
    with pytest.raises(LedgerError, match=needle):
        Release.from_json(doc)  # type: ignore[arg-type]


def test_a_release_round_trips() -> None:
    for release in (Release(SAMPLED_GAUSSIAN, 1.5, 2, 7), Release(LAPLACE, 0.5)):
        assert Release.from_json(release.to_json()) == release


def privacy_policy(epsilon: float) -> str:
    return policy_text().replace("[apps]", f"[privacy]\nepsilon = {epsilon!r}\ndelta = {DELTA}\n\n[apps]", 1)


@pytest.mark.parametrize(("section", "needle"), [
    ("epsilon = 0\ndelta = 1e-5", "epsilon"),
    ("epsilon = 1.0\ndelta = 1", "delta"),
    ("epsilon = 1.0\ndelta = 1e-5\naccountant = 'basic'", "accountant"),
    ("epsilon = 1.0\ndelta = 1e-5\nbudget = 3", "budget"),
])  # fmt: skip
def test_the_policy_budget_is_checked(section: str, needle: str) -> None:
    text = policy_text().replace("[apps]", f"[privacy]\n{section}\n\n[apps]", 1)
    with pytest.raises(FedattestError, match=needle):
        parse_policy(text)
    assert parse_policy(privacy_policy(2.5)).privacy == PrivacyBudget(epsilon=2.5, delta=DELTA)
    assert b'"privacy":{"accountant":"rdp","delta":0.00001,"epsilon":2.5}' in parse_policy(privacy_policy(2.5)).canonical_bytes()
    # Without a budget the canonical bytes are what they were before the section existed: old approvals still hold.
    assert parse_policy(policy_text()).privacy is None and b"privacy" not in parse_policy(policy_text()).canonical_bytes()


def _round_cost() -> float:
    # The harness policy: noise 1.0, one of its one collaborator sampled each round.
    return spent([Release(SAMPLED_GAUSSIAN, 1.0, 1, 1)], DELTA)


def _federation(tmp_path: Path, releases_that_fit: int) -> tuple[SimulatedPlatform, float]:
    """A policy whose budget fits exactly ``releases_that_fit`` rounds, written where the harness serves it."""
    epsilon = spent([Release(SAMPLED_GAUSSIAN, 1.0, 1, 1)] * releases_that_fit, DELTA) * (1 + 1e-9)
    text = privacy_policy(epsilon)
    (tmp_path / "policy.toml").write_text(text)
    (tmp_path / "alice.json").write_text(approve(parse_policy(text), "alice", KEY).to_json())
    return SimulatedPlatform.create(tmp_path / "platform"), epsilon


def test_the_coordinator_charges_every_release_and_refuses_the_one_that_overspends(tmp_path: Path) -> None:
    platform, epsilon = _federation(tmp_path, 4)
    agg, collab = tmp_path / "agg", tmp_path / "a"
    with coordinator(tmp_path, platform) as running:
        activate(running.url, running.root_pem, "aggregator", tee(running, AGG), agg, enrolment_key=ENROL["aggregator"])
        activate(running.url, running.root_pem, "hospital-a", tee(running, COLLAB), collab, enrolment_key=ENROL["hospital-a"])
        url, root = running.url, running.root_pem
        # A round released under a budget needs its reservation first.
        with pytest.raises(FedattestError, match="no privacy budget was reserved for run 7 round 1"):
            report_round(url, root, agg, 7, 1, ["hospital-a"], "ab" * 32, dp=DP)
        answers = [reserve_round(url, root, agg, 7, r) for r in (1, 2, 3)]
        assert [a["reserved"] for a in answers] == [True] * 3
        assert answers[-1]["epsilon_spent"] == pytest.approx(spent([Release(SAMPLED_GAUSSIAN, 1.0, 1, 1)] * 3, DELTA))
        again = reserve_round(url, root, agg, 7, 2)  # a retry is answered as it was, not charged twice
        assert again["again"] is True and again["seq"] == answers[1]["seq"]
        report_round(url, root, agg, 7, 1, ["hospital-a"], "ab" * 32, dp=DP)  # now it is recorded
        reserve_round(url, root, agg, 8, 1)  # the budget is the federation's, across runs: the 4th release
        with pytest.raises(FedattestError, match=r"HTTP 409: reservation refused: this release would spend ε .* remains after 4"):
            reserve_round(url, root, agg, 8, 2)
        with pytest.raises(FedattestError, match="only the aggregator reserves budget"):
            reserve_round(url, root, collab, 9, 1)
        with pytest.raises(FedattestError, match="not one of the policy's 3"):
            reserve_round(url, root, agg, 9, 4)
        with running.http() as http:
            entries = http.get(f"{url}/api/v1/audit").json()["entries"]
        reservations = [e["data"] for e in entries if e["kind"] == "reservation"]
        assert [(r["run_id"], r["round"]) for r in reservations] == [("7", 1), ("7", 2), ("7", 3), ("8", 1)]
        assert all(r["release"] == {"mechanism": SAMPLED_GAUSSIAN, "noise_multiplier": 1.0, "sample_size": 1,
                                    "population": 1} for r in reservations)  # fmt: skip
        assert reservations[-1]["epsilon_after"] <= epsilon
    log = running.log.read_text()
    assert "event=reservation outcome=refused run=8 round=2" in log and "event=reservation outcome=recorded" in log


def test_two_runs_racing_for_the_last_release_get_one(tmp_path: Path) -> None:
    platform, _ = _federation(tmp_path, 2)
    agg = tmp_path / "agg"
    with coordinator(tmp_path, platform) as running:
        activate(running.url, running.root_pem, "aggregator", tee(running, AGG), agg, enrolment_key=ENROL["aggregator"])
        reserve_round(running.url, running.root_pem, agg, 1, 1)
        barrier = threading.Barrier(2)
        outcomes: dict[int, str] = {}

        def race(run_id: int) -> None:
            barrier.wait()
            try:
                reserve_round(running.url, running.root_pem, agg, run_id, 1)
                outcomes[run_id] = "reserved"
            except FedattestError as exc:
                outcomes[run_id] = str(exc)

        threads = [threading.Thread(target=race, args=(run_id,)) for run_id in (2, 3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert sorted(outcomes.values())[-1] == "reserved" and "remains after 2 releases" in sorted(outcomes.values())[0]
        with running.http() as http:
            entries = http.get(f"{running.url}/api/v1/audit").json()["entries"]
        assert sum(e["kind"] == "reservation" for e in entries) == 2


def test_the_ledger_survives_a_restart(tmp_path: Path) -> None:
    platform, _ = _federation(tmp_path, 1)
    agg = tmp_path / "agg"
    running = start(tmp_path, platform)
    try:
        activate(running.url, running.root_pem, "aggregator", tee(running, AGG), agg, enrolment_key=ENROL["aggregator"])
        reserve_round(running.url, running.root_pem, agg, 1, 1)
    finally:
        stop(running)
    running = start(tmp_path, platform)
    try:
        with pytest.raises(FedattestError, match="remains after 1 releases"):
            reserve_round(running.url, running.root_pem, agg, 2, 1)
        assert reserve_round(running.url, running.root_pem, agg, 1, 1)["again"] is True
    finally:
        stop(running)


def test_without_a_budget_nothing_is_charged(tmp_path: Path) -> None:
    platform = SimulatedPlatform.create(tmp_path / "platform")
    with coordinator(tmp_path, platform) as running:
        agg = tmp_path / "agg"
        activate(running.url, running.root_pem, "aggregator", tee(running, AGG), agg, enrolment_key=ENROL["aggregator"])
        answer = reserve_round(running.url, running.root_pem, agg, 1, 1)
        assert answer == {"reserved": False, "reason": "the policy in force sets no privacy budget: nothing is charged"}
        report_round(running.url, running.root_pem, agg, 1, 1, [], "ab" * 32, dp=DP)  # no reservation needed


def test_ledger_costs_are_finite() -> None:
    assert math.isfinite(_round_cost()) and _round_cost() > 0


def test_audit_verify_recomputes_the_ledger(tmp_path: Path) -> None:
    """The bundle of a federation with a budget verifies, its ledger recomputed; a log whose ledger was written
    otherwise (signed with the coordinator's own key, as a dishonest coordinator would) fails that check."""
    import base64

    from fedattest.coordinator.audit import import_log
    from fedattest.coordinator.bundle import read_bundle, verify_bundle
    from fedattest.dcap.verify import QuoteVerifier
    from fedattest.pki.identity import canonical_claims
    from fedattest.pki.signing import UpdateSigner
    from tests.test_audit_bundle import Exported, _exported, relog, repack

    platform, _ = _federation(tmp_path, 3)
    agg = tmp_path / "agg"
    with coordinator(tmp_path, platform) as running:
        activate(running.url, running.root_pem, "aggregator", tee(running, AGG), agg, enrolment_key=ENROL["aggregator"])
        activate(running.url, running.root_pem, "hospital-a", tee(running, COLLAB), tmp_path / "a",
                 enrolment_key=ENROL["hospital-a"])  # fmt: skip
        for r in (1, 2):
            reserve_round(running.url, running.root_pem, agg, 5, r)
            report_round(running.url, running.root_pem, agg, 5, r, ["hospital-a"], "ab" * 32, dp=DP)
        exported: Exported = _exported(running, tmp_path)

        def verify(bundle: bytes) -> dict[str, tuple[bool, str]]:
            report = verify_bundle(bundle, verifier_for=lambda _s: QuoteVerifier(platform.root_ca))
            return {c.subject: (c.ok, c.detail) for c in report.checks}

        checks = verify(exported.bundle)
        ledger = {s: c for s, c in checks.items() if s.startswith("reservation")}
        assert len(ledger) == 2 and all(ok for ok, _ in ledger.values()), checks
        assert any("after 2 releases (recomputed)" in detail for _, detail in ledger.values())
        assert all(ok for ok, _ in checks.values()), [c for c in checks.items() if not c[1][0]]

        def tampered(change: str) -> dict[str, tuple[bool, str]]:
            files = read_bundle(exported.bundle)
            entries, _h, _k = import_log(files["audit-log.json"])
            base = next(e for e in entries if e.kind == "reservation").data
            if change == "epsilon":  # a third reservation, really asked for, that records less than it spent
                signer = UpdateSigner((agg / "key.pem").read_bytes(), (agg / "chain.pem").read_bytes())
                signature = signer.sign(5, "reserve-3", canonical_claims({"run_id": "5", "round": 3}))
                extra = [("reservation", {**base, "round": 3, "epsilon_after": base["epsilon_after"],
                                          "signature": base64.b64encode(signature).decode()})]  # fmt: skip
            elif change == "unreserved":  # a round released with no reservation before it
                report = next(e for e in entries if e.kind == "round").data
                extra = [("round", {**report, "run_id": "6"})]
            else:  # the same release reserved twice
                extra = [("reservation", dict(base))]
            relog(exported, files, lambda _last: extra)
            return verify(repack(files))

        def failures(checks_: dict[str, tuple[bool, str]]) -> list[str]:
            return [detail for ok, detail in checks_.values() if not ok]

        assert any("recomputed from the log" in f for f in failures(tampered("epsilon"))), failures(tampered("epsilon"))
        assert any("released without a privacy budget reservation" in f for f in failures(tampered("unreserved")))
        assert any("reserved twice" in f for f in failures(tampered("twice")))


@pytest.mark.slow  # a whole federation (fedattest flower dev --once)
def test_a_real_run_stops_at_the_round_the_budget_cannot_pay_for(tmp_path: Path) -> None:
    """Flower's aggregator asks the ledger before each round is released: with a budget that pays for two rounds
    of the policy's three, the run stops before releasing the third, saying what remains; two rounds are recorded,
    each after its reservation."""
    import subprocess
    import sys

    from fedattest.coordinator.store import SqliteStore
    from tests.external_app import write_app, write_sites

    app = write_app(tmp_path / "app")
    sites = write_sites(tmp_path / "data")
    state = tmp_path / "dev"
    argv = [sys.executable, "-m", "fedattest", "flower", "dev", str(app), *(f"--data={n}={d}" for n, d in sites.items()),
            "--state", str(state), "--once", "--rounds", "3", "--epsilon", "8"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False, start_new_session=True)
    out = done.stdout + done.stderr
    assert "round 3 is not released, stopping the run: privacy budget:" in out, out[-4000:]
    assert "this release would spend ε 9.01 of the budget 8 at δ 1e-05: 0.9226 remains after 2 releases" in out
    assert "2 rounds recorded in the audit log; ε 7.08 of 8 spent at δ 1e-05 (2 releases)" in out
    # The ledger as the log has it: each released round after its reservation, the third never released.
    store = SqliteStore(state / "coordinator" / "store.sqlite")  # the stopped coordinator's store, read as it is
    try:
        ledger = [(e.kind, e.data["round"]) for e in store.audit_entries() if e.kind in {"reservation", "round"}]
    finally:
        store.close()
    assert ledger == [("reservation", 1), ("round", 1), ("reservation", 2), ("round", 2)]
