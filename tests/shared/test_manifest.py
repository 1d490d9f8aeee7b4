"""The manifest's typed parts: what a version's summary reads from them, and old manifests."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.manifest import Calibration, Manifest
from shared.ml.reliability import ReliabilityRecord
from tests.helpers.versions import draft

AT_CHANCE = {"test": {"images": 15, "balanced_accuracy": 0.33,
                      "balanced_accuracy_ci": [0.13, 0.6]}}


def sealed(**parts: Any) -> Manifest:
    return draft(**parts).seal("v1", files={}, model_sha256="0" * 64)


def test_a_summary_carries_the_test_size_interval_chance_and_calibration() -> None:
    summary = sealed(metrics=AT_CHANCE, calibration={"temperature": 20.0,
                                                     "at_bound": "upper"}).summary()
    assert summary.test_images == 15 and summary.balanced_accuracy_ci == [0.13, 0.6]
    assert summary.chance == pytest.approx(1 / 3)
    assert summary.calibration == Calibration(temperature=20.0, at_bound="upper")
    # no reliability record (published before it): judged by its interval, which holds chance
    assert summary.better_than_chance is False


def test_a_version_published_before_the_record_marks_its_answers_by_its_interval() -> None:
    from shared.ml.reliability import reasons

    record = sealed(metrics=AT_CHANCE).effective_reliability
    assert record is not None and record.confidence_threshold is None
    # what the served version tells every client (/predict, /v2, the CLI), not the page alone
    assert reasons(0.99, False, record) == ["version_not_better_than_chance"]


def test_the_reliability_record_decides_over_the_metrics_when_a_version_has_one() -> None:
    record = ReliabilityRecord(confidence_threshold=None, confidence_coverage=0.95,
                               chance=1 / 3, balanced_accuracy_ci=[0.5, 0.9],
                               better_than_chance=True)
    summary = sealed(metrics=AT_CHANCE, reliability=record.model_dump()).summary()
    assert summary.better_than_chance is True and summary.balanced_accuracy_ci == [0.5, 0.9]


def test_a_version_with_nothing_recorded_says_so() -> None:
    summary = sealed(classes=("a", "b")).summary()
    assert summary.test_images is None and summary.balanced_accuracy_ci is None
    assert summary.better_than_chance is None and summary.calibration is None
    assert summary.chance == 0.5


def test_a_calibration_recorded_without_its_bound_still_loads() -> None:
    old = Calibration.model_validate({"method": "temperature", "temperature": 1.7,
                                      "fitted_on": "validation"})
    assert old.at_bound is None


def test_image_size_and_preprocessing_are_written_once_and_read_back() -> None:
    from shared.manifest import TrainingRecord
    from shared.training_params import TrainingParams

    params = TrainingParams(dataset="t", image_size=32, equalize="clahe", crop_border=0.05,
                            seed=7)
    options = params.preprocess_options.as_dict()
    manifest = sealed(size=32, training=TrainingRecord.of(params, []),
                      preprocessing_options=options)
    written = json.loads(manifest.model_dump_json())
    assert written["image_size"] == 32 and written["preprocessing_options"] == options
    assert not {"image_size", "equalize", "crop_border", "clahe_clip_limit"} & set(
        written["training"])
    assert manifest.training_params() == params


def test_an_older_manifests_repeated_training_fields_still_read() -> None:
    old = sealed(size=32, training={"dataset": "t", "image_size": 32, "equalize": "clahe",
                                    "seed": 7, "phases": [{
                                        "phase": "full", "learning_rate": 0.001, "epochs": 3,
                                        "runtime": {"gpus": 0, "replicas": 1,
                                                    "strategy": "default"}}]})
    assert old.training is not None
    devices = old.training.phases[0].devices
    assert devices is not None and devices.replicas == 1 and devices.strategy == "default"
    written = json.loads(old.model_dump_json())
    assert written["training"]["phases"][0]["runtime"]["replicas"] == 1  # the same key
    assert "image_size" not in written["training"]  # no second copy, and no default shown
