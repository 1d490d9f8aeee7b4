"""Temperature scaling of softmax outputs (the NumPy-only half the API uses)."""

from __future__ import annotations

import numpy as np
import pytest

from shared.ml.calibration import apply_temperature


@pytest.fixture
def probabilities() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.dirichlet([0.5, 0.5, 0.5], size=200)


def test_unit_temperature_returns_the_input(probabilities: np.ndarray) -> None:
    np.testing.assert_allclose(apply_temperature(probabilities, 1.0), probabilities, rtol=1e-12,
                               atol=1e-15)


@pytest.mark.parametrize("temperature", [0.05, 0.5, 2.0, 20.0])
def test_rows_sum_to_one_and_argmax_is_kept(probabilities: np.ndarray,
                                            temperature: float) -> None:
    scaled = apply_temperature(probabilities, temperature)
    assert np.isfinite(scaled).all()
    np.testing.assert_allclose(scaled.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(scaled.argmax(axis=1), probabilities.argmax(axis=1))


def test_temperature_softens_and_sharpens() -> None:
    row = np.array([[0.7, 0.2, 0.1]])
    # softmax(log p / 2) = sqrt(p) / sum(sqrt(p)): sqrt values 0.83666, 0.44721, 0.31623.
    expected = np.sqrt(row) / np.sqrt(row).sum()
    np.testing.assert_allclose(apply_temperature(row, 2.0), expected, rtol=1e-12)
    assert apply_temperature(row, 2.0)[0, 0] < 0.7 < apply_temperature(row, 0.5)[0, 0]


def test_exact_zeros_and_float32_input_stay_finite() -> None:
    row = np.array([[1.0, 0.0, 0.0]], dtype=np.float32)
    scaled = apply_temperature(row, 3.0)
    assert np.isfinite(scaled).all() and scaled[0, 0] == pytest.approx(1.0)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_rejects_a_non_positive_or_non_finite_temperature(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(np.array([[0.5, 0.5]]), temperature)
