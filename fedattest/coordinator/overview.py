"""What a running federation looks like, as one JSON-ready object (pure: no I/O): its policy, members (attestation,
measurement, TCB status, data commitment, activations, attested node key and the Flower node id it was last seen
as) and its latest runs with each round's participants, refusals, DP and metrics.

Built from the coordinator's answers: the audit log (folded entry by entry, so the coordinator folds only the
entries appended since it last looked), the members, the attested node keys and the policy's commitments. Used by
``fedattest status`` (over the exported, verified log) and by the coordinator's ``GET /api/v1/overview`` and
``/status`` page. Bounded whatever the log holds: the last :data:`MAX_RUNS` runs, the last :data:`MAX_ROUNDS`
rounds of each, the last :data:`MAX_REFUSALS` refusals of each and the last :data:`MAX_POLICY_VERSIONS` versions.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from typing import Any

MAX_RUNS = 20
MAX_ROUNDS = 200  # per run; a policy's training.rounds is usually far fewer
MAX_REFUSALS = 10  # per run, the latest (each: member or node, reason)
MAX_POLICY_VERSIONS = 20


class AuditFold:
    """The audit log's entries folded into what the overview shows, in bounded memory. Feed it entries in order
    (:meth:`add`); ``seq`` is the last one folded."""

    def __init__(self) -> None:
        self.seq = -1
        self.entries = 0
        self.activations: dict[str, dict[str, Any]] = {}  # member -> its last activation's entry data (and time)
        self.policies: deque[dict[str, Any]] = deque(maxlen=MAX_POLICY_VERSIONS)
        self.reprovisions = 0
        self.runs: OrderedDict[str, dict[str, Any]] = OrderedDict()  # run id -> run, oldest first
        self.runs_total = 0
        self.node_of: dict[str, dict[str, Any]] = {}  # member -> {node_id, run_id, round} of its latest reported update

    def add(self, entry: Mapping[str, Any]) -> None:
        """Fold one entry: a mapping with ``seq``, ``time``, ``kind`` and ``data`` (an audit entry's JSON)."""
        self.seq, self.entries = int(entry["seq"]), self.entries + 1
        data, kind, when = dict(entry.get("data") or {}), entry["kind"], entry.get("time")
        if kind == "activation":
            self.activations[str(data.get("member"))] = data | {"time": when}
        elif kind == "policy":
            self.policies.append({"version": data.get("version"), "hash": data.get("policy_hash"), "time": when})
        elif kind == "reprovision":
            self.reprovisions += 1
        elif kind == "round":
            self._add_round(data, self.seq, when)

    def _add_round(self, data: dict[str, Any], seq: int, when: Any) -> None:
        run_id = str(data.get("run_id"))
        run = self.runs.get(run_id)
        if run is None:
            run = {"run_id": run_id, "rounds": deque(maxlen=MAX_ROUNDS), "refused": 0,
                   "refusals": deque(maxlen=MAX_REFUSALS), "dp": None, "participants": []}  # fmt: skip
            self.runs[run_id] = run
            self.runs_total += 1
            while len(self.runs) > MAX_RUNS:
                self.runs.popitem(last=False)
        else:
            self.runs.move_to_end(run_id)  # the run reported last is shown last
        participants = [str(p) for p in data.get("participants") or []]
        refused = list(data.get("refused") or [])
        metrics = {str(k): v for k, v in dict(data.get("metrics") or {}).items()}
        run["rounds"].append({"round": data.get("round"), "seq": seq, "time": when, "participants": len(participants),
                              "refused": len(refused), "metrics": metrics})  # fmt: skip
        run["participants"] = participants  # of the round reported last
        run["refused"] += len(refused)
        for r in refused:
            run["refusals"].append({"round": data.get("round"), "member": str(r.get("member")), "reason": str(r.get("reason"))})
        run["dp"] = data.get("dp", run["dp"])
        for member, node in dict(data.get("nodes") or {}).items():
            self.node_of[str(member)] = {"node_id": str(node), "run_id": run_id, "round": data.get("round")}

    def fold(self, entries: Iterable[Mapping[str, Any]]) -> AuditFold:
        for entry in entries:
            self.add(entry)
        return self


def overview(
    state: Mapping[str, Any],
    members: Iterable[Mapping[str, Any]],
    node_keys: Mapping[str, Mapping[str, Any]],
    folded: AuditFold,
    commitments: Mapping[str, str | None],
) -> dict[str, Any]:
    """The overview: ``state`` is the coordinator's status (federation, policy hash, TEE, simulated), ``members``
    its member list (name, role, activations, ...), ``node_keys`` each member's attested node key (member ->
    {public_key}), ``folded`` the audit log, ``commitments`` each member's data commitment from the policy."""
    rows = []
    for m in members:
        name = str(m["name"])
        a = folded.activations.get(name, {})
        node_key = node_keys.get(name)
        seen = folded.node_of.get(name)
        rows.append({
            "name": name, "role": m.get("role"), "attestation": a.get("attestation"), "mrenclave": a.get("mrenclave"),
            "tcb_status": a.get("tcb_status"), "data_commitment": commitments.get(name),
            "activations": m.get("activations"), "max_activations": m.get("max_activations"), "revoked": m.get("revoked", 0),
            "last_activation": m.get("last_activation"),
            "node_key_sha256": hashlib.sha256(str(node_key["public_key"]).encode()).hexdigest() if node_key else None,
            "node_id": seen["node_id"] if seen else None,
        })  # fmt: skip
    policies = list(folded.policies)
    runs = []
    for run in folded.runs.values():
        rounds = list(run["rounds"])
        names = sorted({name for r in rounds for name in r["metrics"]})
        runs.append({**run, "rounds": rounds, "refusals": list(run["refusals"]), "metric_names": names})
    return {
        "federation": state.get("federation"), "policy_hash": state.get("policy_hash"),
        "policy_version": policies[-1]["version"] if policies else None, "tee": state.get("tee"),
        "simulated": state.get("simulated"), "policy_versions": policies, "members": rows,
        "reprovisions": folded.reprovisions, "runs": runs, "runs_total": folded.runs_total,
        "audit_entries": folded.entries, "limits": {"runs": MAX_RUNS, "rounds": MAX_ROUNDS, "refusals": MAX_REFUSALS},
    }  # fmt: skip


def summarise(
    state: Mapping[str, Any],
    members: Iterable[Mapping[str, Any]],
    node_keys: Mapping[str, Mapping[str, Any]],
    entries: Iterable[Mapping[str, Any]],
    commitments: Mapping[str, str | None],
) -> dict[str, Any]:
    """:func:`overview` of a whole audit log given at once (``fedattest status``)."""
    return overview(state, members, node_keys, AuditFold().fold(entries), commitments)
