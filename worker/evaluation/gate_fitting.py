"""Fitting a version's chest-radiograph gate (``shared.ml.chest_gate``) at publish time.

Positives are the version's own training radiographs; negatives are generated, so nothing
but the training data is needed and no one's photographs are shipped: dead-leaves images (a
standard model of natural-image statistics: occluding shapes at power-law sizes), 1/f noise,
rendered text, blob fields (micrographs), geometric patterns and flat or noisy fields, bright
points on a dark field (astronomy, fluorescence), two-level images (masks, line art), plus
radiographs whose anatomy is destroyed (tiles shuffled, blended with a dead-leaves image).
A third of them are blurred, so that smoothness alone does not pass for a radiograph.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np
from PIL import Image, ImageDraw
from sklearn.exceptions import ConvergenceWarning

from shared.manifest import GateCount
from shared.ml.chest_gate import GATE_SIZE, ChestGate, gate_features, standardized
from worker.evaluation.gate_variations import varied

# Negatives per training radiograph, within bounds: enough variety, a bounded fitting time.
NEGATIVES_PER_POSITIVE = 2
MIN_NEGATIVES, MAX_NEGATIVES = 300, 3000
# Share of the validation radiographs allowed below the threshold.
REFUSE_QUANTILE = 0.002
# The network: small enough to fit in seconds and to score in microseconds in the API, with
# an L2 penalty strong enough to keep its boundary smooth around the variations.
HIDDEN_UNITS = 64
REGULARIZATION = 1.0
MAX_ITERATIONS = 300

Generator = Callable[[np.random.Generator], np.ndarray]
S = GATE_SIZE


def dead_leaves(rng: np.random.Generator) -> np.ndarray:
    image = Image.new("F", (S, S), float(rng.uniform(0, 255)))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(20, 300))):
        radius = S * 0.5 * rng.uniform(0.01, 1) ** 2
        x, y = rng.uniform(0, S, 2)
        draw.ellipse([x - radius, y - radius, x + radius, y + radius],
                     fill=float(rng.uniform(0, 255)))
    return np.asarray(image, dtype=np.float64)


def pink_noise(rng: np.random.Generator) -> np.ndarray:
    frequency = np.hypot(np.fft.fftfreq(S)[:, None], np.fft.fftfreq(S)[None])
    amplitude = 1 / np.maximum(frequency, 1 / S) ** rng.uniform(0.8, 2.5)
    field = np.real(np.fft.ifft2(amplitude * np.exp(2j * np.pi * rng.random((S, S)))))
    return np.clip(128 + standardized(field) * rng.uniform(20, 70), 0, 255)


def text_page(rng: np.random.Generator) -> np.ndarray:
    page = Image.new("L", (256, 256), int(rng.uniform(150, 255)))
    draw = ImageDraw.Draw(page)
    for row in range(int(rng.integers(3, 20))):
        line = "".join(chr(int(c)) for c in rng.integers(33, 122, int(rng.integers(5, 40))))
        draw.text((rng.uniform(0, 40), row * rng.uniform(10, 16)), line,
                  fill=int(rng.uniform(0, 100)))
    return np.asarray(page.resize((S, S), Image.Resampling.BILINEAR), dtype=np.float64)


def blob_field(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:S, :S]
    field = np.zeros((S, S))
    for _ in range(int(rng.integers(3, 60))):
        cx, cy, sigma = rng.uniform(0, S), rng.uniform(0, S), rng.uniform(1, 8)
        field += rng.uniform(0.3, 1) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2)
                                              / (2 * sigma**2))
    field /= max(float(field.max()), 1e-6)
    return 255 * (1 - field if rng.random() < 0.5 else field)


def pattern(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:S, :S] / S
    kind = int(rng.integers(5))
    if kind == 0:
        field = (np.floor(xx * rng.integers(2, 16)) + np.floor(yy * rng.integers(2, 16))) % 2
    elif kind == 1:
        field = np.sin(2 * np.pi * (xx * rng.uniform(-10, 10) + yy * rng.uniform(-10, 10)))
    elif kind == 2:
        field = xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)
    elif kind == 3:
        field = rng.uniform(0, 1) + rng.normal(0, rng.uniform(0.001, 0.05), (S, S))
    else:
        field = rng.random((S, S))
    return np.clip(standardized(field) * rng.uniform(10, 80) + rng.uniform(50, 200), 0, 255)


def sparse_points(rng: np.random.Generator) -> np.ndarray:
    """Bright points on a dark field: astronomy, fluorescence microscopy."""
    yy, xx = np.mgrid[:S, :S]
    field = rng.normal(rng.uniform(0, 40), rng.uniform(0, 6), (S, S))
    for _ in range(int(rng.integers(5, 200))):
        cx, cy, sigma = rng.uniform(0, S), rng.uniform(0, S), rng.uniform(0.3, 2.5)
        field += rng.uniform(30, 255) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2)
                                               / (2 * sigma**2))
    return np.clip(field, 0, 255)


def binary(rng: np.random.Generator) -> np.ndarray:
    """Two grey levels: silhouettes, masks, line art, scanned documents."""
    source = GENERATORS[int(rng.integers(4))](rng)
    low, high = sorted(rng.uniform(0, 255, 2))
    return np.asarray(np.where(source > np.quantile(source, rng.uniform(0.2, 0.8)), high, low))


GENERATORS: tuple[Generator, ...] = (dead_leaves, pink_noise, text_page, blob_field, pattern,
                                     sparse_points, binary)


def shuffled_tiles(plane: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    k = int(rng.choice([2, 4, 8]))
    t = S // k
    tiles = [plane[i * t:(i + 1) * t, j * t:(j + 1) * t] for i in range(k) for j in range(k)]
    order = rng.permutation(len(tiles))
    return np.block([[tiles[order[i * k + j]] for j in range(k)] for i in range(k)])


def _blurred(plane: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return np.asarray(gaussian_filter(plane, rng.uniform(0.5, 3)))


def _at_gate_size(plane: np.ndarray) -> np.ndarray:
    image = Image.fromarray(np.asarray(plane, dtype=np.float32), mode="F")
    return np.asarray(image.resize((S, S), Image.Resampling.BOX), dtype=np.float64)


def negatives(radiographs: list[np.ndarray], rng: np.random.Generator,
              count: int) -> list[np.ndarray]:
    """Generated non-radiographs, a sixth of them made from radiographs."""
    planes = [_at_gate_size(p) for p in radiographs] or [pink_noise(rng)]
    made = [GENERATORS[i % len(GENERATORS)](rng) for i in range(count * 5 // 6)]
    for i in range(count - len(made)):
        source = planes[int(rng.integers(len(planes)))]
        made.append(shuffled_tiles(source, rng) if i % 2 else
                    np.clip(0.5 * source + 0.5 * dead_leaves(rng), 0, 255))
    return [_blurred(p, rng) if rng.random() < 1 / 3 else p for p in made]


def fit_gate(train: list[np.ndarray], validation: list[np.ndarray], seed: int) -> ChestGate:
    """A one-hidden-layer network of the training radiographs and a variation of each
    (``gate_variations``) against generated negatives; the threshold lets at most
    REFUSE_QUANTILE of the validation radiographs fall below it, and never lies above the
    network's own boundary (a score of 0)."""
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(seed)
    positives = np.stack([gate_features(p) for p in train + varied(train, rng)])
    count = int(np.clip(NEGATIVES_PER_POSITIVE * len(train), MIN_NEGATIVES, MAX_NEGATIVES))
    negative = np.stack([gate_features(p) for p in negatives(train, rng, count)])
    x = np.concatenate([positives, negative])
    y = np.r_[np.ones(len(positives)), np.zeros(len(negative))]
    mean, scale = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6)
    network = MLPClassifier(hidden_layer_sizes=(HIDDEN_UNITS,), alpha=REGULARIZATION,
                            max_iter=MAX_ITERATIONS, random_state=seed)
    with warnings.catch_warnings():  # stopping at MAX_ITERATIONS is the bound, not a fault
        warnings.simplefilter("ignore", ConvergenceWarning)
        network.fit((x - mean) / scale, y)
    (hidden, output), (hidden_bias, output_bias) = network.coefs_, network.intercepts_
    gate = ChestGate(mean=mean, scale=scale, coef=output[:, 0].astype(np.float64),
                     intercept=float(output_bias[0]), threshold=0.0,
                     hidden=hidden.astype(np.float64), hidden_bias=hidden_bias.astype(np.float64))
    held_out = np.stack([gate_features(p) for p in validation]) if validation else positives
    threshold = min(0.0, float(np.quantile(gate.scores(held_out), REFUSE_QUANTILE)))
    return replace(gate, threshold=threshold)


def refusals(gate: ChestGate, splits: Mapping[str, np.ndarray]) -> dict[str, GateCount]:
    """How many of each split's radiographs (N x H x W, prepared grey) the gate refuses."""
    return {name: GateCount(refused=sum(not gate.check(plane).passed for plane in planes),
                            images=len(planes)) for name, planes in splits.items()}
