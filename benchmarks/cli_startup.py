"""Start-up time of the `fedattest` command line against a bare interpreter, in one run.

    python benchmarks/cli_startup.py [--runs 20] [--no-script] [--json]

Times (wall clock, median of RUNS) `python -c pass` and each everyday command, both as
`python -m fedattest ...` and through the console script next to the interpreter (`.venv/bin/fedattest`)
when there is one. All commands run interleaved (each round runs every command once, in a rotating
order, after one untimed warm-up round), so a change in the machine's load hits them alike. Inputs (a
simulated platform and quote, a policy, a small dataset) are made first in a temporary directory.
Targets: each command under 0.25 s, and within 0.15 s of `python -c pass` (on a quiet machine: the load
average is printed with the table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_WALL_S = 0.25
TARGET_OVER_PYTHON_S = 0.15


@dataclass(frozen=True)
class Case:
    label: str  # as a user would type it (inputs abbreviated)
    argv: list[str]
    baseline: bool = False
    extra: bool = False  # reported, but not one of the commands the targets are for


def fedattest(*args: str | Path) -> str:
    """Run a setup step through the command line; its stdout."""
    proc = subprocess.run(
        [sys.executable, "-m", "fedattest", *map(str, args)], capture_output=True, text=True, cwd=REPO, check=False
    )
    if proc.returncode != 0:
        sys.exit(f"setup step 'fedattest {' '.join(map(str, args))}' failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def make_inputs(d: Path) -> dict[str, Path | str]:
    fedattest("sim", "init", d / "platform")
    fedattest("sim", "quote", "-p", d / "platform", "--mrenclave", "ab" * 32, "--mrsigner", "cd" * 32, "-o", d / "q.bin")
    fedattest("sim", "collateral", "-p", d / "platform", "-o", d / "collateral.json")
    keys = []
    for member in ("aggregator", "hospital-a"):
        fedattest("policy", "keygen", member, "--dir", d)
        keys += ["--enrolment-key", f"{member}={d / f'{member}.pub.pem'}"]
    fedattest("policy", "init", *keys, "-o", d / "policy.toml")
    dataset = d / "dataset"
    dataset.mkdir()
    for i in range(10):
        (dataset / f"part-{i}.csv").write_text("".join(f"{i},{j},{i * j}\n" for j in range(1000)))
    found = re.search(r"\b[0-9a-f]{64}\b", fedattest("data", "commit", dataset))
    if found is None:
        sys.exit("setup: 'fedattest data commit' printed no root")
    return {
        "quote": d / "q.bin",
        "collateral": d / "collateral.json",
        "root_ca": d / "platform" / "root_ca.der",
        "policy": d / "policy.toml",
        "dataset": dataset,
        "root": found.group(0),
        "sigstruct": REPO / "tests" / "vectors" / "sigstruct" / "helloworld.sig",
    }


def commands(i: dict[str, Path | str]) -> list[tuple[str, list[str | Path], bool]]:
    """(label, arguments, extra) for every command timed."""
    return [
        ("--version", ["--version"], False),
        ("--help", ["--help"], False),
        ("quote show Q", ["quote", "show", i["quote"]], False),
        ("sigstruct show S", ["sigstruct", "show", i["sigstruct"]], False),
        ("data commit DIR", ["data", "commit", i["dataset"]], False),
        ("data verify DIR --root HEX", ["data", "verify", i["dataset"], "--root", i["root"]], False),
        ("policy check P", ["policy", "check", i["policy"]], False),
        (
            "quote verify Q --collateral C --root-ca R --allow-simulation",
            ["quote", "verify", i["quote"], "--collateral", i["collateral"], "--root-ca", i["root_ca"], "--allow-simulation"],
            True,
        ),
    ]


def cases(inputs: dict[str, Path | str], script: Path | None) -> list[Case]:
    out = [Case("python -c pass", [sys.executable, "-c", "pass"], baseline=True)]
    for label, args, extra in commands(inputs):
        out.append(Case(f"python -m fedattest {label}", [sys.executable, "-m", "fedattest", *map(str, args)], extra=extra))
        if script is not None:
            out.append(Case(f"fedattest {label}", [str(script), *map(str, args)], extra=extra))
    return out


def run_once(case: Case) -> float:
    start = time.perf_counter()
    proc = subprocess.run(case.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"'{case.label}' exited {proc.returncode}: {proc.stderr.decode(errors='replace').strip()[-500:]}")
    return elapsed


def measure(all_cases: list[Case], runs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {c.label: [] for c in all_cases}
    for c in all_cases:  # warm-up: page cache, bytecode caches
        run_once(c)
    for r in range(runs):
        shift = r % len(all_cases)
        for c in all_cases[shift:] + all_cases[:shift]:
            times[c.label].append(run_once(c))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs of every command; the median is reported")
    parser.add_argument("--no-script", action="store_true", help="time only 'python -m fedattest', not the console script")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    script = Path(sys.executable).with_name("fedattest")
    use_script = None if args.no_script or not os.access(script, os.X_OK) else script
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="fedattest-bench-") as tmp:
        all_cases = cases(make_inputs(Path(tmp)), use_script)
        times = measure(all_cases, args.runs)
    load_after = os.getloadavg()
    base = statistics.median(times[all_cases[0].label])
    rows = []
    for c in all_cases:
        median = statistics.median(times[c.label])
        met = None if c.baseline or c.extra else (median < TARGET_WALL_S and median - base <= TARGET_OVER_PYTHON_S)
        rows.append({
            "command": c.label, "median_s": median, "minus_python_s": median - base, "ratio": median / base,
            "min_s": min(times[c.label]), "baseline": c.baseline, "extra": c.extra, "target_met": met,
        })  # fmt: skip
    report = {
        "runs": args.runs,
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "console_script": str(use_script) if use_script else None,
        "targets": {"wall_s": TARGET_WALL_S, "over_python_s": TARGET_OVER_PYTHON_S},
        "results": rows,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"median of {args.runs} runs; Python {report['python']}, {report['cores']} cores; load average "
        f"{' '.join(f'{x:.2f}' for x in load_before)} before, {' '.join(f'{x:.2f}' for x in load_after)} after"
    )
    print(f"targets: under {TARGET_WALL_S} s, and within {TARGET_OVER_PYTHON_S} s of `python -c pass`\n")
    print("| command | median s | minus `python -c pass` | ratio | target |")
    print("|---|---:|---:|---:|---|")
    for row in rows:
        target = "baseline" if row["baseline"] else "(extra)" if row["extra"] else "ok" if row["target_met"] else "MISSED"
        print(f"| `{row['command']}` | {row['median_s']:.3f} | {row['minus_python_s']:+.3f} | {row['ratio']:.2f}x | {target} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
