"""Split scikit-learn's bundled digits data (1,797 8x8 images; no download) across three hospitals.

    python prepare_data.py OUT_DIR [--hospitals 3] [--seed 7] [--holdout FILE]

Writes OUT_DIR/<hospital>/train.npz and test.npz (arrays ``x`` and ``y``, no pickles). Each hospital gets
a different mix of digits (a skewed, non-IID split, as real sites would have), and its own test set.
With ``--holdout``, a fifth of the data is first set aside there: the public benchmark set the aggregator
scores each round's model on (JSON; it ships inside the app, so it is covered by the app's hash).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

NAMES = ["hospital-a", "hospital-b", "hospital-c", "hospital-d", "hospital-e"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--hospitals", type=int, default=3, choices=range(2, len(NAMES) + 1))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--holdout", type=Path)
    args = parser.parse_args()
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.stderr.write("error: scikit-learn is needed for the example data: pip install 'fedattest[examples]'\n")
        return 2
    digits = load_digits()
    x, y = digits.data.astype(np.uint8), digits.target.astype(np.uint8)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    if args.holdout is not None:
        cut = len(y) // 5
        args.holdout.parent.mkdir(parents=True, exist_ok=True)
        # JSON, not .npz: a Flower app bundle carries text files only (.py, .toml, .json, ...).
        args.holdout.write_text(json.dumps({"x": x[:cut].tolist(), "y": y[:cut].tolist()}, separators=(",", ":")))
        print(f"held out {cut} images for the aggregator's benchmark in {args.holdout}")
        x, y = x[cut:], y[cut:]
    # Skew: hospital i favours the digits i, i+n, ... (about half its data), the rest is shared at random.
    weights = np.ones((args.hospitals, 10))
    for i in range(args.hospitals):
        weights[i, i :: args.hospitals] = 4.0
    site = np.array([rng.choice(args.hospitals, p=weights[:, label] / weights[:, label].sum()) for label in y])
    for i in range(args.hospitals):
        xs, ys = x[site == i], y[site == i]
        cut = int(len(ys) * 0.8)
        where = args.out / NAMES[i]
        where.mkdir(parents=True, exist_ok=True)
        np.savez(where / "train.npz", x=xs[:cut], y=ys[:cut])
        np.savez(where / "test.npz", x=xs[cut:], y=ys[cut:])
        print(f"{NAMES[i]}: {cut} training and {len(ys) - cut} test images in {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
