"""A shift reference's file: every detector survives to_bytes and load, and a file written
without the energy and the test split's scores loads without them."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from shared.ml.shift import Detector, Energy, ShiftReference


def test_a_reference_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    detector = Detector("block3_pool", 0, 4, rng.normal(0, 1, (3, 4)), np.eye(4) * 0.5,
                        centre=1.5, spread=0.7)
    energy = Energy(4, 8, rng.normal(0, 1, (4, 3)), rng.normal(0, 1, 3), centre=-2.0,
                    spread=0.4)
    reference = ShiftReference((detector,), energy, threshold=3.25, quantile=0.96,
                               test_scores=np.array([0.1, 2.0]))
    path = tmp_path / "shift.npz"
    path.write_bytes(reference.to_bytes())
    loaded = ShiftReference.load(path)
    features = rng.normal(0, 1, (5, 8))
    assert set(loaded.detector_scores(features)) == {"block3_pool", "energy"}
    assert np.allclose(loaded.scores(features), reference.scores(features))
    assert (loaded.threshold, loaded.quantile) == (3.25, 0.96)
    assert loaded.test_scores is not None and np.allclose(loaded.test_scores, [0.1, 2.0])


def test_a_file_without_energy_or_test_scores_loads_without_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    means, precision = rng.normal(0, 1, (2, 3)), np.eye(3)
    buffer = io.BytesIO()  # what a reference fitted without them writes, and no more
    np.savez(buffer, layout=np.array("block-mean-std-v2"), threshold=np.float64(2.0),
             quantile=np.float64(0.96), names=np.array(["block4_pool"]), d0_means=means,
             d0_precision=precision, d0_meta=np.array([0, 3, 0.5, 2.0]))
    path = tmp_path / "shift.npz"
    path.write_bytes(buffer.getvalue())
    loaded = ShiftReference.load(path)
    assert loaded.energy is None and loaded.test_scores is None
    x = rng.normal(0, 1, (4, 3))
    distance = np.sqrt((((x[:, None] - means[None]) ** 2).sum(axis=-1)).min(axis=1))
    assert np.allclose(loaded.scores(x), (distance - 0.5) / 2.0)
