"""The distribution-shift score: calibrated on synthetic data, and on a real trained model."""

from __future__ import annotations

import io
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from shared.config import Settings
from shared.datasets import discover
from shared.loading import load_version
from shared.ml.shift import INPUT, LEGACY_LAYOUT, ShiftReference
from shared.registry import Registry
from shared.registry.local import LocalRegistry
from shared.training_params import TrainingParams
from tests.helpers.env import sample_files
from tests.helpers.versions import Recorder
from worker.context import JobContext
from worker.evaluation.shift_fitting import fit_reference
from worker.runner.retrain import train_and_publish


def test_threshold_flags_in_distribution_data_at_its_promised_rate() -> None:
    rng = np.random.default_rng(0)
    means = np.array([[0.0] * 8, [4.0] + [0.0] * 7, [0.0, 4.0] + [0.0] * 6])
    cov = np.diag(np.linspace(0.5, 2.0, 8))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 3, n)
        return rng.multivariate_normal(np.zeros(8), cov, n) + means[labels], labels

    train, train_labels = draw(5000)
    val, _ = draw(5000)
    reference = fit_reference(train, train_labels, val, quantile=0.99)
    fresh, _ = draw(20000)
    rate = float((reference.scores(fresh) > reference.threshold).mean())
    assert 0.005 < rate < 0.02  # promised: 1%
    far = np.full((10, 8), 12.0)
    assert (reference.scores(far) > reference.threshold).all()


def test_detectors_are_standardized_stored_and_combined(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    train, val = rng.normal(0, 1, (3000, 6)), rng.normal(0, 1, (3000, 6))
    labels = rng.integers(0, 2, 3000)
    inputs = (rng.normal(0, 1, (3000, 4)), rng.normal(0, 1, (3000, 4)))
    slices = {"a": (0, 3), "b": (3, 6), "block5_pool:mean": (3, 6)}
    dense = (rng.normal(0, 1, (3, 2)), np.zeros(2))
    reference = fit_reference(train, labels, val, quantile=0.95, slices=slices,
                              detectors=("a", "b", INPUT), inputs=inputs, dense=dense)
    scores = reference.detector_scores(val, inputs[1])
    assert set(scores) == {"a", "b", INPUT, "energy"}
    for values in scores.values():  # each standardized on validation: median 0, IQR 1
        q1, median, q3 = np.quantile(values, [0.25, 0.5, 0.75])
        assert abs(median) < 1e-9 and abs(q3 - q1 - 1) < 1e-9
    assert abs(float((reference.scores(val, inputs[1]) > reference.threshold).mean())
               - 0.05) < 0.002
    # a shift in one part only is caught by the largest score
    odd_input = inputs[1][:50] + 6.0
    assert (reference.scores(val[:50], odd_input) > reference.threshold).mean() > 0.9
    with pytest.raises(ValueError, match="input"):
        reference.scores(val)
    path = tmp_path / "shift.npz"
    path.write_bytes(replace(reference, test_scores=np.arange(3.0)).to_bytes())
    loaded = ShiftReference.load(path)
    assert np.allclose(loaded.scores(val, inputs[1]), reference.scores(val, inputs[1]))
    assert loaded.threshold == reference.threshold and loaded.test_scores is not None


def test_a_reference_published_before_the_detectors_loads_as_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    means, precision = rng.normal(0, 1, (3, 5)), np.eye(5) * 2
    path = tmp_path / "shift.npz"
    np.savez(path, means=means, precision=precision, threshold=np.float64(4.0),
             quantile=np.float64(0.99))  # the file as versions of 2026-11 wrote it
    legacy = ShiftReference.load(path)
    assert legacy.layout == LEGACY_LAYOUT and not legacy.needs_inputs
    x = rng.normal(0, 1, (20, 5))
    diff = x[:, None, :] - means[None]
    expected = np.sqrt(np.einsum("ncd,de,nce->nc", diff, precision, diff).min(axis=1))
    assert np.allclose(legacy.scores(x), expected) and legacy.threshold == 4.0


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def trained(radiography_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    root = tmp_path_factory.mktemp("shift")
    for label, files in sample_files(radiography_root, 40).items():
        (root / "data" / label).mkdir(parents=True)
        for path in files:
            shutil.copy(path, root / "data" / label / path.name)
    # No ONNX export (nor INT8 copy): the shift score is read from the Keras model here.
    settings = Settings(models_dir=root / "models", state_dir=root / "state",
                        export_onnx=False)
    params = TrainingParams(dataset="data", epochs=4, image_size=48, base_weights="none",
                            batch_size=16, seed=3, learning_rate=1e-4,
                            early_stopping_patience=0)
    train_and_publish(discover(root / "data"), params, JobContext(settings, Recorder()))
    return LocalRegistry(settings.models_dir)


@pytest.mark.trains
def test_images_that_are_not_chest_xrays_are_flagged(trained: Registry,
                                                     radiography_root: Path) -> None:
    from skimage import data as samples

    version = trained.versions()[0]
    model = load_version(trained, version.version)
    assert model.shift is not None
    xray = sample_files(radiography_root, 200)["Normal"][-1].read_bytes()
    with Image.open(io.BytesIO(xray)) as image:
        inverted = _png(ImageOps.invert(image.convert("L")))
    noise = _png(Image.fromarray(np.random.default_rng(1).integers(0, 256, (256, 256),
                                                                   dtype=np.uint8)))
    photo = _png(Image.fromarray(samples.astronaut()))
    flags = {name: model.predict(model.decode(data, 10**8).gray).distribution_shift
             for name, data in (("noise", noise), ("photo", photo), ("inverted", inverted))}
    assert all(shift is not None and shift.flagged for shift in flags.values()), flags
    assert version.metrics.test is not None and version.distribution_shift is not None
    test_rate = version.metrics.test.shift_flag_rate
    # the validation split's 96th percentile of the largest of four detectors, on ~18
    # validation images: a handful of the ~18 test images
    assert test_rate is not None and test_rate <= 0.3
    assert version.distribution_shift.test_flag_rate == test_rate
