"""The model: multinomial logistic regression, 64 pixel features -> 10 classes, trained by full-batch
gradient descent. Plain numpy so the app has no dependencies beyond Flower and fedattest."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np

FEATURES, CLASSES = 64, 10
HOLDOUT = Path(__file__).with_name("holdout.json")  # the public benchmark set, shipped in the app


def initial_weights() -> list[np.ndarray]:
    return [np.zeros((FEATURES, CLASSES), dtype=np.float64), np.zeros(CLASSES, dtype=np.float64)]


def load_split(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """An ``.npz`` with ``x`` (n x 64, pixel values 0..16) and ``y`` (n labels). No pickles."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return npz["x"].astype(np.float64) / 16.0, npz["y"].astype(np.int64)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def train(weights: list[np.ndarray], x: np.ndarray, y: np.ndarray, lr: float, epochs: int) -> tuple[list[np.ndarray], float]:
    w, b = weights[0].copy(), weights[1].copy()
    onehot = np.eye(CLASSES)[y]
    loss = 0.0
    for _ in range(epochs):
        p = _softmax(x @ w + b)
        loss = float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))
        grad = p - onehot
        w -= lr * (x.T @ grad) / len(y)
        b -= lr * grad.mean(axis=0)
    return [w, b], loss


def evaluate(weights: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    p = _softmax(x @ weights[0] + weights[1])
    loss = float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))
    return loss, float(np.mean(p.argmax(axis=1) == y))


def score_on_holdout(server_round: int, weights: list[np.ndarray]) -> tuple[float, float]:
    """Loss and accuracy on the public benchmark set (no patient data leaves a hospital), printing the
    round's line. Its wall-clock stamp lets benchmarks/flower_overhead.py time rounds from the streamed log."""
    doc = json.loads(HOLDOUT.read_text())
    x, y = np.asarray(doc["x"], dtype=np.float64) / 16.0, np.asarray(doc["y"], dtype=np.int64)
    loss, accuracy = evaluate(weights, x, y)
    if server_round > 0:
        print(f"fedattest-example: round {server_round}: accuracy {accuracy:.3f} (t={time.time():.3f})", flush=True)
    return loss, accuracy
