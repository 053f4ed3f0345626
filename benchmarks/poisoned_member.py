"""One member with a NaN in its committed data: what the attested federation's model becomes.

    .venv/bin/python benchmarks/poisoned_member.py [--rounds 3] [--out DIR] [--json]

The digits federation of examples/digits (coordinator, SuperLink, three SuperNodes, real Flower processes on
127.0.0.1), with one change made before the hospitals commit to their data: hospital-c's training set gets
one NaN pixel. hospital-c's updates are then NaN in every round. Measured: the attested run's accuracy on the
holdout set per round, and which updates its ServerApp refused.

The baseline, in the same run and on the same data, is what Flower's FedAvg makes of the same three updates
without the check (computed here with the app's own training code, learning rate and epochs, from the same
initial model): one NaN update makes the global model NaN, and a NaN model predicts class 0 for every image.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "digits"))

import run_demo  # noqa: E402 - the example's federation driver
from digits_fl.task import evaluate, initial_weights, load_split, train  # noqa: E402

POISONED = "hospital-c"
STAMP = re.compile(r"fedattest-example: round (\d+): accuracy ([0-9.]+)")
REFUSED = re.compile(r"round (\d+): refused the update of ([a-z0-9.-]+) \(node \d+\): (.*)")


def poison(data: Path) -> None:
    """One NaN pixel in hospital-c's training images (stored as floats, as a site's own pipeline might)."""
    path = data / POISONED / "train.npz"
    with np.load(path, allow_pickle=False) as npz:
        x, y = npz["x"].astype(np.float64), npz["y"]
    x[0, 0] = np.nan
    np.savez(path, x=x, y=y)


def baseline(data: Path, holdout: Path, rounds: int) -> list[float]:
    """Flower's FedAvg (weighted by examples) of the same hospitals' updates, without the check."""
    config = tomllib.loads((ROOT / "examples" / "digits" / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    lr, epochs = float(config["learning-rate"]), int(config["local-epochs"])
    doc = json.loads(holdout.read_text())
    hx, hy = np.asarray(doc["x"], dtype=np.float64) / 16.0, np.asarray(doc["y"], dtype=np.int64)
    sites = [load_split((data / h / "train.npz").read_bytes()) for h in run_demo.HOSPITALS]
    weights = initial_weights()
    accuracy = []
    for _ in range(rounds):
        updates = [(train(weights, x, y, lr, epochs)[0], len(y)) for x, y in sites]
        total = sum(n for _, n in updates)
        with np.errstate(invalid="ignore"):
            weights = [sum(u[i] * n for u, n in updates) / total for i in range(2)]
            accuracy.append(evaluate(weights, hx, hy)[1])
    return accuracy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, help="keep the run's files here (default: a temporary directory)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    run_demo.say = lambda text: print(text, file=sys.stderr, flush=True)  # progress on stderr: stdout is the result
    out = args.out.resolve() if args.out else Path(tempfile.mkdtemp(prefix="fedattest-bench-"))
    if args.out and out.exists() and any(out.iterdir()):
        parser.error(f"--out {out} is not empty")
    try:
        with run_demo.federation(out) as fed:
            env, procs = fed["env"], fed["procs"]
            started = run_demo.start_attested(out, procs, env, rounds=args.rounds, prepare=poison)
            done = run_demo.run([str(run_demo.BIN / "flwr"), "run", str(started.app_dir), "attested", "--stream"], env,
                                timeout=900)  # fmt: skip
            streamed = done.stdout + done.stderr
        attested = [float(a) for _, a in sorted((int(r), a) for r, a in STAMP.findall(streamed))]
        refused = [(int(r), who, why) for r, who, why in REFUSED.findall(streamed)]
        plain = baseline(out / "data", out / "holdout.json", args.rounds)
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)
    result: dict[str, Any] = {
        "rounds": args.rounds, "poisoned": POISONED, "attested_accuracy": attested, "baseline_accuracy": plain,
        "refused": [{"round": r, "member": who, "reason": why} for r, who, why in refused],
    }  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"one NaN pixel in {POISONED}'s training data, {args.rounds} rounds:")
        for i in range(args.rounds):
            a = f"{attested[i]:.3f}" if i < len(attested) else "-"
            print(f"  round {i + 1}: attested accuracy {a}   FedAvg without the check {plain[i]:.3f}")
        for r, who, why in refused:
            print(f"  round {r}: refused {who}: {why}")
    ok = len(attested) == args.rounds and all(np.isfinite(attested)) and {w for _, w, _ in refused} == {POISONED}
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
