"""Training, evaluation and publishing on real X-rays, at tiny size."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.config import Settings
from shared.datasets import discover
from shared.errors import JobCancelled, NotAChestXray, TrainingDiverged
from shared.loading import load_version
from shared.manifest import BaseWeightsRecord, Manifest
from shared.ml.preprocessing import (
    DecodedImage,
    decode_grayscale,
    decode_image,
    load_pixels,
    to_model_input,
)
from shared.registry.files import (
    CARD_HTML,
    CARD_MD,
    CURVES_FILE,
    GATE_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    ONNX_FILE,
    RELIABILITY_FILE,
    SHIFT_FILE,
)
from shared.registry.local import LocalRegistry
from shared.training_params import TrainingParams
from tests.helpers.reporters import Crash, CrashAfter
from tests.helpers.versions import TINY, Recorder, Trained
from worker.context import JobContext
from worker.data.pipeline import load_split_pixels, make_pipeline, split_dataset
from worker.evaluation.scores import temperature_at_bound
from worker.runner.retrain import train_and_publish


def test_training_and_serving_produce_identical_tensors(tiny_dataset: Path) -> None:
    dataset = discover(tiny_dataset)
    split = split_dataset(dataset, 0.2, 0.2, seed=3)[0]["test"]
    pixels = load_split_pixels(split, 48, 10**8)
    batch, _ = next(iter(make_pipeline(pixels, split.labels, batch_size=len(split.labels))))
    served = np.stack([to_model_input(load_pixels(p.read_bytes(), 48)) for p in split.paths])
    np.testing.assert_array_equal(batch.numpy(), served)


def test_split_is_stratified_disjoint_seeded_and_keeps_copies_together(
    tiny_dataset: Path
) -> None:
    # a re-encoded copy of one film, planted in the same class
    original = next((tiny_dataset / "COVID" / "images").iterdir())
    with Image.open(original) as image:
        image.convert("L").save(tiny_dataset / "COVID" / "images" / "copy.jpg", quality=75)
    dataset = discover(tiny_dataset)
    first, details = split_dataset(dataset, 0.25, 0.25, seed=11)
    again, _ = split_dataset(dataset, 0.25, 0.25, seed=11)
    other, _ = split_dataset(dataset, 0.25, 0.25, seed=12)
    names = {k: {p.name for p in s.paths} for k, s in first.items()}
    assert not names["train"] & names["validation"] and not names["train"] & names["test"]
    assert sum(len(v) for v in names.values()) == 37
    assert details["duplicate_groups"] >= 1
    assert [k for k, v in names.items() if {original.name, "copy.jpg"} <= v]  # same split
    for split in first.values():
        assert all(n >= 2 for n in np.bincount(split.labels, minlength=3))
    assert [p.name for p in again["test"].paths] == [p.name for p in first["test"].paths]
    assert [p.name for p in other["test"].paths] != [p.name for p in first["test"].paths]


def test_a_patient_csv_keeps_each_patient_in_one_split(tiny_dataset: Path) -> None:
    dataset = discover(tiny_dataset)
    rows = ["file,patient_id"] + [f"{p.name},patient-{i // 2}"
                                  for i, p in enumerate(sorted(p for files in
                                                               dataset.files.values()
                                                               for p in files))]
    csv = tiny_dataset / "patients.csv"
    csv.write_text("\n".join(rows))
    splits, details = split_dataset(dataset, 0.25, 0.25, seed=1, groups_csv=csv)
    where = {p.name: name for name, split in splits.items() for p in split.paths}
    patients: dict[str, set[str]] = {}
    for row in rows[1:]:
        file, patient = row.split(",")
        patients.setdefault(patient, set()).add(where[file])
    assert all(len(s) == 1 for s in patients.values())
    assert details["group_key"] == "patients.csv:patient_id"


def test_the_trained_version_is_complete_and_sealed(trained: Trained) -> None:
    registry, version = trained.registry, trained.version
    # a random base is trained whole, in one phase
    assert [(p.epoch, p.phase) for p in trained.recorder.progress] == [
        (1, "full"), (2, "full"), (3, "full")]
    manifest = registry.manifest(version)
    assert manifest == Manifest.model_validate(
        json.loads((registry.version_dir(version) / MANIFEST_FILE).read_text()))
    assert manifest.classes == ["COVID", "Normal", "Viral Pneumonia"]
    assert manifest.image_size == 32 and manifest.parent is None
    assert len(manifest.history["loss"]) == 3 and len(manifest.history["val_accuracy"]) == 3
    assert manifest.split.seed == 7 and manifest.split.duplicate_groups is not None
    assert manifest.split.method is not None and "near-duplicates" in manifest.split.method
    test = manifest.metrics.test
    assert test is not None and manifest.split.test is not None
    assert sum(manifest.split.test.counts.values()) == test.images == 6
    assert test.confusion_matrix is not None
    assert np.array(test.confusion_matrix.counts).sum() == 6
    assert manifest.dataset.fingerprint == discover(trained.dataset).fingerprint()
    assert {"tensorflow", "keras", "numpy"} <= set(manifest.libraries)
    for name in (MODEL_FILE, CURVES_FILE, RELIABILITY_FILE, SHIFT_FILE, GATE_FILE, ONNX_FILE,
                 CARD_MD, CARD_HTML):
        assert registry.verified_file(version, name) is not None, name
    assert (registry.version_dir(version) / CURVES_FILE).read_bytes().startswith(b"\x89PNG")
    assert (registry.version_dir(version) / RELIABILITY_FILE).read_bytes()[:4] == b"\x89PNG"
    calibration = manifest.calibration
    assert calibration is not None and calibration.temperature > 0
    assert calibration.fitted_on == "validation" and calibration.ece_after == test.ece
    assert calibration.at_bound == temperature_at_bound(calibration.temperature)


def test_a_version_no_better_than_chance_is_published_but_not_activated(
        trained: Trained) -> None:
    manifest = trained.registry.manifest(trained.version)
    record, promotion = manifest.reliability, manifest.promotion
    assert record is not None and promotion is not None
    assert record.chance == 1 / 3 and record.balanced_accuracy_ci is not None
    # six test images: the interval is wide enough to include chance
    assert record.better_than_chance is False and record.balanced_accuracy_ci[0] <= 1 / 3
    assert promotion.activated is False and "includes chance" in promotion.reason
    assert trained.registry.active() is None


def test_the_card_tells_what_the_version_is_and_is_not(trained: Trained) -> None:
    folder = trained.registry.version_dir(trained.version)
    card = (folder / CARD_MD).read_text()
    assert trained.version in card and "research, not a diagnostic device" in card
    assert "pediatric" in card and "| COVID |" in card
    assert "When an answer is not a finding" in card and "includes chance" in card
    html = (folder / CARD_HTML).read_text()
    assert "<table>" in html and RELIABILITY_FILE in html


def test_the_served_answer_carries_calibration_gate_and_reliability(trained: Trained) -> None:
    manifest = trained.registry.manifest(trained.version)
    loaded = load_version(trained.registry, trained.version)
    assert manifest.calibration is not None
    assert loaded.temperature == manifest.calibration.temperature
    image = next((trained.dataset / "COVID" / "images").iterdir()).read_bytes()
    prediction = loaded.predict(decode_grayscale(image))
    assert set(prediction.probabilities) == set(manifest.classes)
    assert abs(sum(prediction.probabilities.values()) - 1) < 1e-5
    assert prediction.model_version == trained.version
    assert prediction.distribution_shift is not None
    assert "version_not_better_than_chance" in prediction.reasons and not prediction.reliable
    assert manifest.reliability is not None
    assert prediction.confidence_threshold == manifest.reliability.confidence_threshold
    # its chest-radiograph gate keeps a radiograph and refuses a photograph
    assert loaded.gate is not None and manifest.chest_xray_gate is not None
    assert manifest.chest_xray_gate.threshold == loaded.gate.threshold
    check = loaded.screen(decode_image(image), "refuse").check
    assert check is not None and check.passed
    from skimage import data as samples

    with pytest.raises(NotAChestXray):
        loaded.screen(DecodedImage(samples.camera().astype(np.float32)), "refuse")


def test_the_onnx_export_serves_the_same_answer(trained: Trained) -> None:
    manifest = trained.registry.manifest(trained.version)
    assert manifest.onnx is not None and manifest.onnx.file == ONNX_FILE
    assert manifest.onnx.max_difference is not None and manifest.onnx.max_difference < 1e-4
    image = decode_grayscale(next((trained.dataset / "Normal" / "images").iterdir()).read_bytes())
    keras_answer = load_version(trained.registry, trained.version).predict(image)
    onnx = load_version(trained.registry, trained.version, runtime="onnx", precision="float32")
    assert (onnx.runtime, onnx.precision) == ("onnx", "float32")
    answer = onnx.predict(image)
    assert answer.label == keras_answer.label
    for label, p in keras_answer.probabilities.items():
        assert abs(answer.probabilities[label] - p) < 1e-4
    assert answer.distribution_shift is not None and keras_answer.distribution_shift is not None
    assert abs(answer.distribution_shift.score - keras_answer.distribution_shift.score) < 1e-2 * (
        1 + abs(keras_answer.distribution_shift.score))


def test_the_schedule_runtime_and_preprocessing_are_recorded(trained: Trained) -> None:
    from shared.ml.preprocessing import PreprocessOptions, preprocessing_id

    manifest = trained.registry.manifest(trained.version)
    rates = manifest.history["learning_rate"]
    assert len(rates) == 3 and rates[0] > rates[1] > rates[2] and rates[0] <= 1e-3
    assert manifest.training is not None and manifest.training.lr_schedule == "cosine"
    devices = manifest.training.phases[0].devices
    runtime = devices.model_dump() if devices else None
    import tensorflow as tf

    gpus = len(tf.config.list_physical_devices("GPU"))
    assert runtime is not None and runtime["gpus"] == gpus
    assert runtime["jit_compile"] is (gpus > 0)  # CXR_TRAIN_JIT_COMPILE=auto
    if gpus == 0:  # mixed precision and the mirrored strategy are for GPUs only
        assert runtime["precision_policy"] == "float32" and runtime["strategy"] == "default"
    assert all(p.last and p.last.val_balanced_accuracy is not None and p.last.elapsed_s
               for p in trained.recorder.progress)
    # every batch reports where it stands in its epoch, and every step after training its own
    # progress, from its start (0 done) to its end
    assert manifest.split.train is not None
    batches = -(-sum(manifest.split.train.counts.values()) // trained.params.batch_size)
    assert [(b.epoch, b.batch) for b in trained.recorder.batches] == [
        (epoch, batch) for epoch in (1, 2, 3) for batch in range(1, batches + 1)]
    assert all(b.batches == batches and b.epochs == 3 and b.phase == "full" and b.loss
               for b in trained.recorder.batches)
    phases = trained.recorder.phases
    assert [name for name, done, _ in phases if done == 0] == [
        "evaluation", "calibration", "saving", "onnx export", "int8 copy", "publishing"]
    assert [name for name, done, total in phases if done == total > 0] == [
        "evaluation", "calibration", "saving", "onnx export", "int8 copy", "publishing"]
    assert ("evaluation", 36, 36) in phases
    # every new version decodes large images at reduced size
    options = PreprocessOptions(equalize="clahe", crop_border=0.05, reduce_large=True)
    assert manifest.preprocessing_options == options.as_dict()
    assert manifest.preprocessing == preprocessing_id(options) != preprocessing_id()
    loaded = load_version(trained.registry, trained.version)
    image = next((trained.dataset / "Normal" / "images").iterdir()).read_bytes()
    served = loaded.pixels(loaded.decode(image, 10**8).gray)
    np.testing.assert_array_equal(served, load_pixels(image, 32, options=options))
    assert not np.array_equal(served, load_pixels(image, 32))


@pytest.mark.trains
def test_cancel_stops_training_and_publishes_nothing(
    tiny_dataset: Path, settings: Settings
) -> None:
    params = TrainingParams(dataset="tiny", **{**TINY, "epochs": 5})  # type: ignore[arg-type]
    recorder = Recorder(cancel_after_epochs=1)
    with pytest.raises(JobCancelled):
        train_and_publish(discover(tiny_dataset), params, JobContext(settings, recorder))
    assert len(recorder.progress) == 1
    assert LocalRegistry(settings.models_dir).versions() == []
    assert LocalRegistry(settings.models_dir).active() is None


@pytest.mark.trains
def test_a_resumed_job_continues_from_its_checkpoint(
    tiny_dataset: Path, settings: Settings, tmp_path: Path
) -> None:
    params = TrainingParams(dataset="tiny", **TINY)  # type: ignore[arg-type]
    checkpoint = tmp_path / "checkpoint"
    with pytest.raises(Crash):
        train_and_publish(discover(tiny_dataset), params,
                          JobContext(settings, CrashAfter(1), checkpoint))
    assert (checkpoint / "state.json").is_file()
    assert LocalRegistry(settings.models_dir).versions() == []

    resumed = Recorder()
    version = train_and_publish(discover(tiny_dataset), params,
                                JobContext(settings, resumed, checkpoint))
    assert [p.epoch for p in resumed.progress] == [2]  # epoch 1 came from the checkpoint
    registry = LocalRegistry(settings.models_dir)
    manifest = registry.manifest(version)
    assert len(manifest.history["loss"]) == 2  # the checkpoint's epoch and the resumed one
    assert manifest.training is not None and manifest.training.phases[0].epochs_run == 2
    # CXR_EXPORT_ONNX off (the settings fixture): no export, and the manifest says why
    assert ONNX_FILE not in manifest.files and manifest.onnx is not None
    assert manifest.onnx.file is None and "CXR_EXPORT_ONNX" in (manifest.onnx.error or "")

    # a checkpoint of another request is not resumed
    other = params.model_copy(update={"seed": 99})
    fresh = Recorder()
    again = train_and_publish(discover(tiny_dataset), other,
                              JobContext(settings, fresh, checkpoint))
    assert [p.epoch for p in fresh.progress] == [1, 2]
    assert registry.manifest(again).parent == version  # the active one when it was trained


@pytest.mark.trains
@pytest.mark.parametrize("views", [0, 2])
def test_pretrained_weights_train_the_head_then_fine_tune_block5(
    tiny_dataset: Path, tmp_path: Path, views: int
) -> None:
    import keras

    from shared.checksums import sha256_file

    weights = tmp_path / "vgg16_notop.weights.h5"
    keras.applications.VGG16(include_top=False, weights=None,
                             input_shape=(32, 32, 3)).save_weights(weights)
    settings = Settings(models_dir=tmp_path / "models", state_dir=tmp_path / "state",
                        base_weights_file=weights, base_weights_sha256=sha256_file(weights),
                        export_onnx=False)
    params = TrainingParams(dataset="tiny", **{**TINY, "epochs": 2,  # type: ignore[arg-type]
                                               "base_weights": "file",
                                               "head_cache_views": views})
    recorder = Recorder()
    version = train_and_publish(discover(tiny_dataset), params, JobContext(settings, recorder))
    assert [(p.epoch, p.phase) for p in recorder.progress] == [
        (1, "head"), (2, "head"), (3, "fine_tune")]
    assert all(p.last and p.last.val_balanced_accuracy is not None for p in recorder.progress)
    manifest = LocalRegistry(settings.models_dir).manifest(version)
    assert manifest.training is not None
    assert manifest.training.phases[0].cached_views == views
    assert len(manifest.history["loss"]) == 3
    assert manifest.base_weights == BaseWeightsRecord(choice="file", sha256=sha256_file(weights))
    assert [p.phase for p in manifest.training.phases] == ["head", "fine_tune"]


def test_a_time_budget_stops_training() -> None:
    import keras

    from worker.training.callbacks import time_budget_callback

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.zeros((8, 2), np.float32)
    started = time.monotonic()
    fitted = model.fit(x, x[:, :1], epochs=1000, verbose=0,
                       callbacks=[time_budget_callback(started, budget_s=0.5)])
    assert 1 <= len(fitted.history["loss"]) < 1000
    assert time.monotonic() - started < 5


@pytest.mark.trains
def test_several_sources_train_together_and_a_held_out_one_is_scored_apart(
    tiny_dataset: Path, image_dataset_root: Path, settings: Settings, tmp_path: Path
) -> None:
    from shared.datasets import combine

    other = tmp_path / "other"  # a second hospital in the class-folder layout, 6 per class
    for folder in sorted(p for p in image_dataset_root.iterdir() if p.is_dir()):
        (other / folder.name).mkdir(parents=True)
        for path in sorted(folder.iterdir())[:6]:
            (other / folder.name / path.name).write_bytes(path.read_bytes())
    covid_only = settings.data_dir / "covid-only"  # an external set of one class
    (covid_only / "COVID").mkdir(parents=True)
    for path in sorted((image_dataset_root / "COVID").iterdir())[-5:]:
        (covid_only / "COVID" / path.name).write_bytes(path.read_bytes())
    dataset = combine([("tiny", discover(tiny_dataset)), ("other", discover(other))])
    params = TrainingParams(dataset="tiny", datasets=["other"], holdout_source="other",
                            intensity_augmentation=True, external_datasets=["covid-only"],
                            **{**TINY, "epochs": 1})  # type: ignore[arg-type]
    version = train_and_publish(dataset, params, JobContext(settings, Recorder()))
    manifest = LocalRegistry(settings.models_dir).manifest(version)
    assert manifest.sources == {"tiny": {"COVID": 12, "Normal": 12, "Viral Pneumonia": 12},
                                "other": {"COVID": 6, "Normal": 6, "Viral Pneumonia": 6}}
    split = manifest.split
    assert split.test is not None and split.train is not None
    assert split.test.sources == {"other": 18} and split.holdout_source == "other"
    assert set(split.train.sources or {}) == {"tiny"}
    by_source = manifest.metrics.test_by_source
    assert by_source is not None and list(by_source) == ["other"]
    assert by_source["other"].images == 18
    covid = by_source["other"].per_class["COVID"]
    assert covid.support == 6 and covid.sensitivity is not None
    assert covid.specificity is not None and covid.specificity_ci is not None
    assert len(covid.specificity_ci) == 2
    assert manifest.training is not None and manifest.training.intensity_augmentation is True
    # 36 training images: too few for a gate, and the card says so
    assert GATE_FILE not in manifest.files
    assert manifest.chest_xray_gate is not None and manifest.chest_xray_gate.reason is not None
    assert "fewer than 500" in manifest.chest_xray_gate.reason
    card = (LocalRegistry(settings.models_dir).version_dir(version) / CARD_MD).read_text()
    assert "Test split by source" in card and "other (held out)" in card
    assert manifest.external_evaluations is not None
    external = manifest.external_evaluations["covid-only"]
    assert external.images == 5 and list(external.sensitivity) == ["COVID"]
    assert external.balanced_accuracy == external.sensitivity["COVID"]
    assert external.gate_refused is None and external.shift_flagged is not None
    assert "Other hospitals' images" in card and "| covid-only | 5 |" in card
    assert "no chest-radiograph gate" in card


def test_the_intensity_augmentation_keeps_pixels_in_range_and_grey() -> None:
    from worker.data.pipeline import augmentation

    rng = np.random.default_rng(0)
    plane = rng.uniform(0, 255, (8, 32, 32, 1)).astype(np.float32)
    batch = np.repeat(plane, 3, axis=-1)
    out = np.asarray(augmentation(3, intensity=True)(batch, training=True))
    assert out.min() >= 0.0 and out.max() <= 255.0
    np.testing.assert_allclose(out[..., 0], out[..., 2], atol=1e-4)  # still grey
    plain = np.asarray(augmentation(3)(batch, training=True))
    assert not np.allclose(out, plain)
    assert np.array_equal(np.asarray(augmentation(3, intensity=True)(batch, training=False)),
                          batch)


@pytest.mark.trains
def test_a_diverging_training_stops_at_its_first_non_finite_loss_with_a_code(
    tiny_dataset: Path, settings: Settings
) -> None:
    params = TrainingParams(dataset="tiny", **{**TINY, "epochs": 4},  # type: ignore[arg-type]
                            learning_rate=1.0)
    recorder = Recorder()
    with pytest.raises(TrainingDiverged, match="non-finite") as caught:
        train_and_publish(discover(tiny_dataset), params, JobContext(settings, recorder))
    assert caught.value.code == "training_diverged"
    assert len(recorder.progress) < 4  # stopped, not trained to the end
    assert all(math.isfinite(value) for p in recorder.progress if p.last
               for value in p.last.model_dump(exclude_none=True).values())
    assert LocalRegistry(settings.models_dir).versions() == []
