"""Verified reads vs plain hashing, and time to the last byte of a big committed file, in one run.

    python benchmarks/verified_read.py [--size-mib 2048] [--chunk-size-mib 1] [--json]

Commits one file of SIZE MiB (page-cached), then measures:
  sequential verified read  reading the file through CommittedDataset.open (every chunk hashed and
                            compared), MiB/s, against a single-pass hashlib SHA-256 of the same file read
                            the same way (what any integrity check must at least pay);
  last chunk, first byte    open_dataset + open + seek to the last byte + read(1), in ms, printed next to
                            the time a whole-file hash takes (what Gramine's trusted files pay at open).
Targets (issue 3): verified read >= 0.9 x the hashlib single-pass rate; last chunk < 10 ms.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fedattest.data import commit_directory, open_dataset  # noqa: E402

MIB = 1 << 20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--chunk-size-mib", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is kept")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.size_mib < 1 or args.repeat < 1 or args.chunk_size_mib < 1:
        parser.error("--size-mib, --chunk-size-mib and --repeat must be positive")
    size = args.size_mib * MIB
    with tempfile.TemporaryDirectory(prefix="fedattest-bench-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        block = os.urandom(64 * MIB)
        with (data / "big.bin").open("wb") as fh:
            for i in range(0, size, len(block)):
                fh.write(i.to_bytes(8, "big") + block[8 : min(len(block), size - i)])
        commitment, _ = commit_directory(data, chunk_size=args.chunk_size_mib * MIB)  # also warms the page cache
        buf = bytearray(args.chunk_size_mib * MIB)

        def plain() -> None:
            h = hashlib.sha256()
            with (data / "big.bin").open("rb", buffering=0) as fh:
                while n := fh.readinto(buf):
                    h.update(memoryview(buf)[:n])
            h.digest()

        def verified() -> None:
            with open_dataset(data, commitment.root).open("big.bin") as fh:
                while fh.readinto(buf):
                    pass

        def last_byte() -> None:
            with open_dataset(data, commitment.root).open("big.bin") as fh:
                fh.seek(-1, os.SEEK_END)
                fh.read(1)

        def best(run: object) -> float:
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                run()  # type: ignore[operator]
                times.append(time.perf_counter() - start)
            return min(times)

        t_plain, t_verified, t_last = best(plain), best(verified), best(last_byte)
    report = {
        "bytes": size,
        "hashlib_single_pass_mib_per_s": size / t_plain / MIB,
        "verified_read_mib_per_s": size / t_verified / MIB,
        "verified_vs_hashlib": t_plain / t_verified,
        "last_chunk_first_byte_ms": t_last * 1000,
        "whole_file_hash_ms": t_plain * 1000,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"file: {args.size_mib} MiB, chunks of {args.chunk_size_mib} MiB, page-cached")
    print(f"  hashlib single pass      {report['hashlib_single_pass_mib_per_s']:8.0f} MiB/s")
    ratio = report["verified_vs_hashlib"]
    print(f"  verified sequential read {report['verified_read_mib_per_s']:8.0f} MiB/s   ratio {ratio:.2f} (target >= 0.9)")
    print(f"  last chunk, first byte   {report['last_chunk_first_byte_ms']:8.2f} ms      (target < 10 ms)")
    print(f"  whole-file hash          {report['whole_file_hash_ms']:8.0f} ms      (what a trusted file pays at open)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
