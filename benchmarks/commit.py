"""Committing a dataset, end to end, against coreutils on the same page-cached files, in one run.

    python benchmarks/commit.py                        # large files: 24 x 8 MiB vs `sha256sum FILES`
    python benchmarks/commit.py --small-files          # 100,000 x 1 KiB vs `find | xargs sha256sum`
    python benchmarks/commit.py --small-files 20000 --small-size-kib 4 --repeat 5 --json

Both modes generate the data in a temporary directory, read it once so that it is in the page cache,
then run the baseline and `fedattest data commit DIR` (the console script, as a subprocess: start-up
included) alternately, --repeat times each, and report medians. Peak RSS is that of the commit process
(GNU `/usr/bin/time -f %M`, or getrusage of a fresh child without it). The index is written outside the
data directory, so both sides hash the same files.

- large files (default 24 x 8 MiB): baseline `sha256sum FILES` (one process). Also single-core hashlib
  SHA-256 of an in-memory buffer, and the commit engine in-process: the machine's parallel ceiling.
  Targets: commit >= 1.5x sha256sum end to end; engine >= 0.9 x (cores x single-core hashlib).
- small files (--small-files [N], default 100,000 x 1 KiB): baseline
  `find DIR -type f -print0 | xargs -0 sha256sum >/dev/null`. Targets: ratio pipeline/commit > 1
  (fedattest faster), commit peak RSS <= 100 MiB.

The machine may be shared: the load average is printed before and after; interleaved runs and medians
keep the comparison fair when the load changes during the run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import fedattest  # noqa: F401 - the installed (or PYTHONPATH) fedattest, the one the console script runs
except ImportError:  # pragma: no cover - run with a Python that does not have it installed
    sys.path.insert(0, str(REPO))

from fedattest.data import commit_directory  # noqa: E402

MIB = 1 << 20
TIME = "/usr/bin/time"
DIR_FILES = 1000  # small-files mode: files per subdirectory


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:  # pragma: no cover - not Linux
        return "?"


def fedattest_command() -> list[str]:
    """The console script next to this interpreter (a venv's bin/), else ``python -m fedattest``."""
    script = Path(sys.executable).with_name("fedattest")
    return [str(script)] if script.exists() else [sys.executable, "-m", "fedattest"]


def gnu_time() -> bool:
    if not os.access(TIME, os.X_OK):
        return False
    probe = subprocess.run([TIME, "-f", "%M", "true"], capture_output=True, text=True, check=False)
    return probe.returncode == 0 and probe.stderr.strip().isdigit()


# Run a command in a fresh Python whose only child it is: that child's peak RSS is then RUSAGE_CHILDREN's.
_RUSAGE = (
    "import resource, subprocess, sys;"
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL);"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def run_measured(cmd: list[str], use_time: bool, scratch: Path) -> tuple[float, int]:
    """(wall seconds, peak RSS in KiB) of ``cmd``, whose stdout is discarded."""
    start = time.perf_counter()
    if use_time:
        out = scratch / "rss"
        subprocess.run([TIME, "-f", "%M", "-o", str(out), *cmd], check=True, stdout=subprocess.DEVNULL)
        elapsed = time.perf_counter() - start
        return elapsed, int(out.read_text().split()[-1])
    proc = subprocess.run([sys.executable, "-c", _RUSAGE, *cmd], check=True, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    return elapsed, int(proc.stdout.strip())


def run_timed(cmd: list[str], *, shell: bool = False) -> float:
    start = time.perf_counter()
    subprocess.run(cmd if not shell else cmd[0], shell=shell, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def interleave(repeat: int, runs: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Each run ``repeat`` times, alternating (A B, B A, A B...), so a load change hits both alike."""
    out: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(repeat):
        for name in names if r % 2 == 0 else reversed(names):
            out[name].append(runs[name]())
    return out


def warm(directory: Path) -> None:
    for root, _, files in os.walk(directory):
        for name in files:
            with open(os.path.join(root, name), "rb") as fh:
                while fh.read(16 * MIB):
                    pass


def generate_large(directory: Path, files: int, size: int) -> list[str]:
    block = os.urandom(size)
    paths = []
    for i in range(files):
        sub = directory / f"part-{i % 10}"
        sub.mkdir(exist_ok=True)
        path = sub / f"file-{i:04d}.bin"
        # Each file differs (its index up front) so nothing is deduplicated anywhere.
        path.write_bytes(i.to_bytes(8, "big") + block[8:])
        paths.append(str(path))
    return sorted(paths)


def generate_small(directory: Path, files: int, size: int) -> None:
    block = os.urandom(max(size, 8))
    for i in range(files):
        if i % DIR_FILES == 0:
            sub = directory / f"dir-{i // DIR_FILES:04d}"
            sub.mkdir()
        with open(sub / f"file-{i:07d}.bin", "wb") as fh:
            fh.write((i.to_bytes(8, "big") + block[8:])[:size])


def commit_cmd(data: Path, index: Path, chunk_size_mib: int) -> list[str]:
    chunk = f"{chunk_size_mib}MiB"
    return [*fedattest_command(), "data", "commit", str(data), "--index", str(index), "--chunk-size", chunk, "--json"]


def bench_large(args: argparse.Namespace, use_time: bool) -> dict[str, object]:
    size = int(args.size_mib * MIB)
    total = args.files * size
    cores = os.cpu_count() or 1
    rss: list[int] = []
    with tempfile.TemporaryDirectory(prefix="fedattest-bench-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        paths = generate_large(data, args.files, size)
        warm(data)
        index = Path(tmp) / "index"
        cmd = commit_cmd(data, index, args.chunk_size_mib)

        def ours() -> float:
            elapsed, peak = run_measured(cmd, use_time, Path(tmp))
            rss.append(peak)
            return elapsed

        runs = interleave(args.repeat, {"sha256sum": lambda: run_timed(["sha256sum", *paths]), "commit": ours})
        buf = os.urandom(min(total, 256 * MIB))
        t_single = min(_timed(lambda: hashlib.sha256(buf).digest()) for _ in range(args.repeat)) * total / len(buf)
        chunk = args.chunk_size_mib * MIB
        t_engine = min(_timed(lambda: commit_directory(data, chunk_size=chunk, index_path=index)) for _ in range(args.repeat))
    t_sum, t_commit = statistics.median(runs["sha256sum"]), statistics.median(runs["commit"])
    times = {"sha256sum": t_sum, "commit": t_commit, "hashlib_1_core": t_single, "engine": t_engine}
    rate = {name: total / t / MIB for name, t in times.items()}
    return {
        "mode": "large",
        "files": args.files,
        "bytes": total,
        "cores": cores,
        "repeat": args.repeat,
        "runs_s": runs,
        "mib_per_s": rate,
        "commit_vs_sha256sum": t_sum / t_commit,
        "engine_vs_cores_x_hashlib": rate["engine"] / (cores * rate["hashlib_1_core"]),
        "commit_peak_rss_kib": max(rss),
    }


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_small(args: argparse.Namespace, use_time: bool) -> dict[str, object]:
    size = args.small_size_kib * 1024
    rss: list[int] = []
    with tempfile.TemporaryDirectory(prefix="fedattest-bench-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        generate_small(data, args.small_files, size)
        warm(data)
        index = Path(tmp) / "index"
        cmd = commit_cmd(data, index, args.chunk_size_mib)
        pipeline = f"find {data} -type f -print0 | xargs -0 sha256sum >/dev/null"

        def ours() -> float:
            elapsed, peak = run_measured(cmd, use_time, Path(tmp))
            rss.append(peak)
            return elapsed

        runs = interleave(args.repeat, {"pipeline": lambda: run_timed([pipeline], shell=True), "commit": ours})
    t_pipe, t_commit = statistics.median(runs["pipeline"]), statistics.median(runs["commit"])
    return {
        "mode": "small",
        "files": args.small_files,
        "file_bytes": size,
        "bytes": args.small_files * size,
        "cores": os.cpu_count() or 1,
        "repeat": args.repeat,
        "runs_s": runs,
        "pipeline_s": t_pipe,
        "commit_s": t_commit,
        "pipeline_vs_commit": t_pipe / t_commit,
        "commit_peak_rss_kib": max(rss),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=24, help="large-files mode: number of files (default 24)")
    parser.add_argument("--size-mib", type=float, default=8.0, help="large-files mode: MiB per file (default 8)")
    parser.add_argument("--chunk-size-mib", type=int, default=1)
    parser.add_argument(
        "--small-files", type=int, nargs="?", const=100_000, default=None, metavar="N",
        help="small-files mode: N files (default 100,000) against find | xargs sha256sum",
    )  # fmt: skip
    parser.add_argument("--small-size-kib", type=int, default=1, help="small-files mode: KiB per file (default 1)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs of each side; medians are reported")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.files < 1 or args.size_mib <= 0 or args.repeat < 1 or args.small_size_kib < 0:
        parser.error("--files, --size-mib and --repeat must be positive")
    if args.small_files is not None and args.small_files < 1:
        parser.error("--small-files must be positive")
    for tool in ("sha256sum", "find", "xargs"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is needed for the baseline")
    use_time = gnu_time()
    before = loadavg()
    report = bench_small(args, use_time) if args.small_files is not None else bench_large(args, use_time)
    report.update(loadavg_before=before, loadavg_after=loadavg(), rss_from="/usr/bin/time -f %M" if use_time else "getrusage")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print_report(report)
    return 0


def _runs(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def print_report(r: dict[str, object]) -> None:
    runs: dict[str, list[float]] = r["runs_s"]  # type: ignore[assignment]
    rss_mib = int(r["commit_peak_rss_kib"]) / 1024  # type: ignore[call-overload]
    load = f"load {r['loadavg_before']} -> {r['loadavg_after']}"
    if r["mode"] == "small":
        print(
            f"small files: {r['files']:,} x {int(r['file_bytes']) // 1024} KiB, page-cached, {r['cores']} cores, {load}"  # type: ignore[call-overload]
        )
        print(f"  {'':38s} {'median':>8s}   runs (s, interleaved)")
        print(f"  {'find | xargs -0 sha256sum':38s} {r['pipeline_s']:7.2f}s   {_runs(runs['pipeline'])}")
        print(f"  {'fedattest data commit':38s} {r['commit_s']:7.2f}s   {_runs(runs['commit'])}")
        print(f"  pipeline / commit   {r['pipeline_vs_commit']:.2f}x   (> 1: fedattest is faster)")
        print(f"  commit peak RSS     {rss_mib:.0f} MiB   (target <= 100 MiB; {r['rss_from']})")
        return
    rate: dict[str, float] = r["mib_per_s"]  # type: ignore[assignment]
    total_mib = int(r["bytes"]) / MIB  # type: ignore[call-overload]
    print(f"large files: {r['files']} files, {total_mib:.0f} MiB, page-cached, {r['cores']} cores, {load}")
    print(f"  {'':38s} {'median':>8s} {'MiB/s':>8s}   runs (s, interleaved)")
    t_sum, t_commit = statistics.median(runs["sha256sum"]), statistics.median(runs["commit"])
    print(f"  {'sha256sum FILES':38s} {t_sum:7.2f}s {rate['sha256sum']:8.0f}   {_runs(runs['sha256sum'])}")
    print(f"  {'fedattest data commit (end to end)':38s} {t_commit:7.2f}s {rate['commit']:8.0f}   {_runs(runs['commit'])}")
    ceiling = int(r["cores"]) * rate["hashlib_1_core"]  # type: ignore[call-overload]
    print(f"  {'hashlib, 1 core':38s} {'':8s} {rate['hashlib_1_core']:8.0f}   (x {r['cores']} cores = {ceiling:.0f} MiB/s)")
    print(f"  {'commit engine, in-process (best)':38s} {'':8s} {rate['engine']:8.0f}")
    print(f"  commit / sha256sum               {r['commit_vs_sha256sum']:.2f}x   (end to end, start-up included; target >= 1.5x)")
    print(f"  engine / (cores x 1-core rate)   {r['engine_vs_cores_x_hashlib']:.2f}    (target >= 0.9)")
    print(f"  commit peak RSS                  {rss_mib:.0f} MiB   ({r['rss_from']})")


if __name__ == "__main__":
    sys.exit(main())
