"""The learning-rate schedule, by hand and inside a real Keras fit."""

from __future__ import annotations

import time

import numpy as np
import pytest

from worker.training.callbacks import cosine_rate, cosine_schedule_callback


def test_cosine_rate_warms_up_then_anneals_to_zero() -> None:
    assert cosine_rate(0.0, 1e-3, 0.1) == 0.0
    assert cosine_rate(0.05, 1e-3, 0.1) == pytest.approx(5e-4)
    assert cosine_rate(0.1, 1e-3, 0.1) == pytest.approx(1e-3)
    assert cosine_rate(0.55, 1e-3, 0.1) == pytest.approx(5e-4)  # half-way down the cosine
    assert cosine_rate(1.0, 1e-3, 0.1) == pytest.approx(0.0, abs=1e-12)
    assert cosine_rate(2.0, 1e-3, 0.0) == pytest.approx(0.0, abs=1e-12)  # past the end
    assert cosine_rate(0.0, 1e-3, 0.0) == 1e-3


def _fit_recording_rates(callback: object, epochs: int, steps: int) -> list[float]:
    import keras

    rates: list[float] = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch: int, logs: object = None) -> None:
            rates.append(float(self.model.optimizer.learning_rate.numpy()))

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1.0), loss="mse")
    x = np.zeros((4 * steps, 2), np.float32)
    model.fit(x, x[:, :1], batch_size=4, epochs=epochs, verbose=0, shuffle=False,
              callbacks=[callback, Record()])
    return rates


def test_the_schedule_drives_the_optimizer_batch_by_batch() -> None:
    epochs, steps = 4, 5
    rates = _fit_recording_rates(
        cosine_schedule_callback(1e-2, epochs, steps, time.monotonic(), None, 0.25),
        epochs, steps)
    expected = [cosine_rate(i / (epochs * steps), 1e-2, 0.25) for i in range(epochs * steps)]
    assert rates == pytest.approx(expected, rel=1e-5, abs=1e-9)
    assert max(rates) == pytest.approx(1e-2) and rates[-1] < 1e-3


def test_a_spent_time_budget_anneals_the_rate_before_the_last_epoch() -> None:
    # The budget, not the epoch count, is what runs out: the rate must already be near zero.
    started = time.monotonic() - 99.0
    rates = _fit_recording_rates(
        cosine_schedule_callback(1e-2, 100, 3, started, 100.0, 0.05), 1, 3)
    assert rates and all(rate < 1e-2 * 0.01 for rate in rates)  # under 1% of the peak
