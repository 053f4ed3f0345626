"""Committing a dataset vs sha256sum and vs the machine's parallel hashing ceiling, in one run.

    python benchmarks/commit.py [--files 200] [--size-mib 10] [--chunk-size-mib 1] [--json]

Generates FILES x SIZE MiB of data in a temporary directory, reads it once so it is in the page cache,
then times, over the same files: `sha256sum` (GNU coreutils, one process), single-core hashlib SHA-256
of an in-memory buffer (the per-core ceiling), and `fedattest.data.commit_directory` (all cores).
Targets (issue 3): commit >= 1.5x sha256sum, and >= 0.9 x (cores x single-core hashlib rate).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fedattest.data import commit_directory  # noqa: E402

MIB = 1 << 20


def generate(directory: Path, files: int, size: int) -> None:
    block = os.urandom(size)
    for i in range(files):
        sub = directory / f"part-{i % 10}"
        sub.mkdir(exist_ok=True)
        # Each file differs (its index up front) so nothing is deduplicated anywhere.
        (sub / f"file-{i:04d}.bin").write_bytes(i.to_bytes(8, "big") + block[8:])


def warm(directory: Path) -> None:
    for path in directory.rglob("*.bin"):
        with path.open("rb") as fh:
            while fh.read(16 * MIB):
                pass


def best_of(repeat: int, run: object) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--size-mib", type=float, default=10.0)
    parser.add_argument("--chunk-size-mib", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is kept")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.files < 1 or args.size_mib <= 0 or args.repeat < 1:
        parser.error("--files, --size-mib and --repeat must be positive")
    if shutil.which("sha256sum") is None:
        parser.error("sha256sum (GNU coreutils) is needed for the baseline")
    size = int(args.size_mib * MIB)
    total = args.files * size
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="fedattest-bench-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        generate(data, args.files, size)
        warm(data)
        paths = sorted(str(p) for p in data.rglob("*.bin"))
        t_sum = best_of(args.repeat, lambda: subprocess.run(["sha256sum", *paths], check=True, stdout=subprocess.DEVNULL))
        buf = os.urandom(min(total, 256 * MIB))
        t_single = best_of(args.repeat, lambda: hashlib.sha256(buf).digest()) * total / len(buf)
        index = Path(tmp) / "index"
        t_commit = best_of(args.repeat, lambda: commit_directory(data, chunk_size=args.chunk_size_mib * MIB, index_path=index))
    rate = {name: total / t / MIB for name, t in (("sha256sum", t_sum), ("hashlib_1_core", t_single), ("commit", t_commit))}
    report = {
        "files": args.files,
        "bytes": total,
        "cores": cores,
        "mib_per_s": rate,
        "commit_vs_sha256sum": rate["commit"] / rate["sha256sum"],
        "commit_vs_cores_x_hashlib": rate["commit"] / (cores * rate["hashlib_1_core"]),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"dataset: {args.files} files x {args.size_mib:g} MiB = {total / MIB:.0f} MiB (page-cached), {cores} cores")
    print(f"  sha256sum            {rate['sha256sum']:8.0f} MiB/s")
    ceiling = cores * rate["hashlib_1_core"]
    print(f"  hashlib, 1 core      {rate['hashlib_1_core']:8.0f} MiB/s   (x {cores} cores = {ceiling:.0f} MiB/s)")
    print(f"  fedattest commit     {rate['commit']:8.0f} MiB/s")
    print(f"  commit / sha256sum              {report['commit_vs_sha256sum']:.2f}x   (target >= 1.5x)")
    print(f"  commit / (cores x 1-core rate)  {report['commit_vs_cores_x_hashlib']:.2f}    (target >= 0.9)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
