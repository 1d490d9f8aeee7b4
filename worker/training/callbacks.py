"""Keras callbacks of a training run: progress and cancellation, epoch logs, time budget."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from shared.schemas import EpochMetrics, JobProgress
from worker.context import BatchProgress, Reporter


def _finite(logs: dict[str, Any], key: str) -> float | None:
    value = float(logs[key]) if key in logs else math.nan
    return value if math.isfinite(value) else None


def progress_callback(reporter: Reporter, total_epochs: int, phase: str) -> Any:
    import keras

    class Progress(keras.callbacks.Callback):
        cancelled = False
        _epoch = 0

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self._epoch = epoch

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            logs = logs or {}
            reporter.batch_end(BatchProgress(
                epoch=self._epoch + 1, epochs=total_epochs, phase=phase, batch=batch + 1,
                batches=self.params.get("steps"), loss=_finite(logs, "loss"),
                accuracy=_finite(logs, "accuracy")))
            # Keras 3 checks stop_training after every batch: a cancel stops the next one.
            if reporter.cancel_requested():
                self._stop()

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            logs = logs or {}
            last = EpochMetrics(**{k: float(logs[k]) for k in EpochMetrics.model_fields
                                   if k in logs and math.isfinite(float(logs[k]))})
            if reporter.epoch_end(JobProgress(epoch=epoch + 1, epochs=total_epochs,
                                              phase=phase, last=last)):
                self._stop()

        def _stop(self) -> None:
            self.cancelled = True
            self.model.stop_training = True

    return Progress()


def divergence_callback() -> Any:
    """Stops at the first batch whose loss is not finite (as Keras' TerminateOnNaN does) and
    remembers where, so the job fails with a reason instead of training on NaN weights."""
    import keras

    class Divergence(keras.callbacks.Callback):
        diverged_at: tuple[int, int] | None = None
        _epoch = 0

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self._epoch = epoch

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                self.diverged_at = (self._epoch + 1, batch + 1)
                self.model.stop_training = True

    return Divergence()


def epoch_logs_callback(model: Any, val: Any, labels: np.ndarray, started: float) -> Any:
    """Adds val_balanced_accuracy (the metric time-to-accuracy and the promotion decision
    are judged on) and elapsed_s to each epoch's logs, before the other callbacks read them."""
    import keras

    class EpochLogs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if logs is None:
                return
            if len(labels):
                # the model being fitted on its own validation input: the classifier on images,
                # or its head on cached features (the same answers, without running the frozen
                # base again each epoch); called on each batch, not predict(): no function to
                # trace for it (a tiny job's 0.3 s)
                predicted = np.concatenate([np.asarray(model(x, training=False)).argmax(axis=1)
                                            for x, _ in val])
                logs["val_balanced_accuracy"] = float(balanced_accuracy_score(labels, predicted))
            logs["elapsed_s"] = time.monotonic() - started
            # the rate the epoch ended on, so a schedule shows in the history and the curves
            logs["learning_rate"] = float(np.asarray(self.model.optimizer.learning_rate))

    return EpochLogs()


def time_budget_callback(started: float, budget_s: float) -> Any:
    """Stops training when one more epoch, as long as the last, would overrun the budget."""
    import keras

    class TimeBudget(keras.callbacks.Callback):
        _epoch_start = 0.0

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self._epoch_start = time.monotonic()

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            now = time.monotonic()
            if now - started + (now - self._epoch_start) > budget_s:
                self.model.stop_training = True

    return TimeBudget()


def cosine_rate(progress: float, peak: float, warmup: float) -> float:
    """Linear warm-up to ``peak`` over the first ``warmup`` of training, then a half cosine
    to zero at the end (progress 1)."""
    progress = min(max(progress, 0.0), 1.0)
    if warmup > 0 and progress < warmup:
        return peak * progress / warmup
    return peak * 0.5 * (1.0 + math.cos(math.pi * (progress - warmup) / (1.0 - warmup)))


def cosine_schedule_callback(peak: float, epochs: int, steps_per_epoch: int, started: float,
                             budget_s: float | None, warmup: float, first_epoch: int = 0) -> Any:
    """Sets the learning rate before every batch from how far training is: the larger of the
    fraction of epochs done and, under a time budget, the fraction of that budget spent, so
    a run stopped by its budget still ends annealed (time to accuracy, as in DAWNBench)."""
    import keras

    class CosineSchedule(keras.callbacks.Callback):
        _epoch = 0

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self._epoch = epoch - first_epoch  # epochs count on across phases and resumes

        def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            progress = (self._epoch + batch / max(steps_per_epoch, 1)) / max(epochs, 1)
            if budget_s:
                progress = max(progress, (time.monotonic() - started) / budget_s)
            self.model.optimizer.learning_rate.assign(cosine_rate(progress, peak, warmup))

    return CosineSchedule()
