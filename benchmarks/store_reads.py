"""What `/status`, `/members` and `/public-keys` cost as the coordinator's history grows.

    .venv/bin/python benchmarks/store_reads.py [--activations 5000] [--members 50] [--json]

Fills a real store (`SqliteStore`, SQLite in WAL mode) with ``--activations`` activation records of the
size real ones have (about 10 KB: certificate, token, quote and claims) spread over ``--members`` members,
then times, in the same run, the reads those endpoints used to make (every record of the history loaded and
parsed) against the ones they make now (counts by SQLite, and only each member's latest record).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedattest.coordinator.store import ActivationRecord, SqliteStore  # noqa: E402


def timed(run: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--activations", type=int, default=5000)
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.activations < 1 or args.members < 1:
        parser.error("--activations and --members must be at least 1")
    with tempfile.TemporaryDirectory(prefix="fedattest-bench-") as name:
        store = SqliteStore(Path(name) / "store.sqlite")
        verdict = {"attestation": "verified", "quote_b64": "A" * 6000, "claims": {"nonce": "0" * 64}, "public_key_pems": {}}
        with store.transaction() as tx:
            for i in range(args.activations):
                record = ActivationRecord(f"m{i % args.members}", "collaborator", "C" * 1000, f"{i:064x}", "T" * 800,
                                          verdict, "2026-11-29T00:00:00Z")  # fmt: skip
                tx.add_activation(record)
        members = [f"m{i}" for i in range(args.members)]
        rows = {
            "status (count)": (lambda: len(store.activations()), lambda: sum(t for t, _ in store.activation_counts().values())),
            "members (counts, latest)": (
                lambda: [store.activations(m) for m in members],
                lambda: (store.activation_counts(), [store.latest_activation(m) for m in members]),
            ),
            "public-keys (latest)": (
                lambda: [store.activations(m)[-1:] for m in members],
                lambda: [store.latest_activation(m) for m in members],
            ),
        }
        result = {}
        for label, (before, now) in rows.items():
            old, new = timed(before), timed(now)
            result[label] = {"before_ms": old * 1000, "now_ms": new * 1000, "speedup": old / new}
        store.close()
    if args.json:
        print(json.dumps({"activations": args.activations, "members": args.members, "reads": result}, indent=2))
        return 0
    print(f"{args.activations} activations, {args.members} members (median of 5):")
    print(f"  {'read':<26} {'before (all records)':>20} {'now':>10} {'speedup':>8}")
    for label, r in result.items():
        print(f"  {label:<26} {r['before_ms']:>17.1f} ms {r['now_ms']:>7.2f} ms {r['speedup']:>7.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
