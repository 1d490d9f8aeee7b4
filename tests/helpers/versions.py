"""Model versions for tests: random-weight ones published without training, the tiny
training recipe, and a reporter that records progress."""

from __future__ import annotations

import io
import json
import shutil
import time
import zipfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from shared.config import Settings
from shared.manifest import (
    DatasetRecord,
    EvaluatedDataset,
    ExternalReport,
    ManifestDraft,
    SplitMetrics,
)
from shared.ml.modeling import ModelConfig, build_model
from shared.registry import Registry
from shared.registry.base import VERSION_PATTERN
from shared.registry.files import MODEL_FILE
from shared.registry.local import LocalRegistry
from shared.schemas import JobProgress
from shared.training_params import TrainingParams
from tests.helpers.env import sample_files
from worker.context import BatchProgress

# Two epochs at 32 px from a random base: seconds, and enough to exercise every step.
TINY: dict[str, Any] = {"epochs": 2, "fine_tune_epochs": 1, "image_size": 32,
                        "base_weights": "none", "batch_size": 8, "seed": 7}


class Recorder:
    """A reporter that keeps every batch's and epoch's progress and every phase step, and
    can ask to cancel after some epochs."""

    def __init__(self, cancel_after_epochs: int | None = None) -> None:
        self.progress: list[JobProgress] = []
        self.batches: list[BatchProgress] = []
        self.phases: list[tuple[str, int, int]] = []
        self.cancel_after = cancel_after_epochs

    def batch_end(self, progress: BatchProgress) -> None:
        self.batches.append(progress)

    def phase(self, name: str, done: int, total: int) -> None:
        self.phases.append((name, done, total))

    def epoch_end(self, progress: JobProgress) -> bool:
        self.progress.append(progress)
        return self.cancel_requested()

    def cancel_requested(self) -> bool:
        return self.cancel_after is not None and len(self.progress) >= self.cancel_after


def copy_tiny(radiography: Path, target: Path, per_class: int = 12) -> Path:
    """A 3-class copy of the first ``per_class`` images of each class, radiography layout."""
    for label, files in sample_files(radiography, per_class).items():
        (target / label / "images").mkdir(parents=True)
        for path in files:
            shutil.copy(path, target / label / "images" / path.name)
    return target


@dataclass(frozen=True)
class Trained:
    """The suite's one trained version, published into its own registry."""

    dataset: Path
    params: TrainingParams
    settings: Settings
    recorder: Recorder
    version: str

    @property
    def registry(self) -> LocalRegistry:
        return LocalRegistry(self.settings.models_dir)


def _trained_settings(root: Path) -> Settings:
    return Settings(models_dir=root / "models", state_dir=root / "state",
                    promotion_refuse_chance=True)


def shared_trained(radiography: Path, root: Path) -> Trained:
    """``train_once`` in ``root``, done by the first of the suite's processes (pytest-xdist
    workers) to ask; the others wait for it and read what it recorded."""
    from filelock import FileLock

    record = root / "trained.json"
    with FileLock(f"{root}.lock"):
        if not record.is_file():
            trained = train_once(radiography, root)
            record.write_text(json.dumps({
                "params": trained.params.model_dump(mode="json"), "version": trained.version,
                "progress": [p.model_dump(mode="json") for p in trained.recorder.progress],
                "batches": [asdict(b) for b in trained.recorder.batches],
                "phases": trained.recorder.phases}))
            return trained
    saved = json.loads(record.read_text())
    recorder = Recorder()
    recorder.progress = [JobProgress.model_validate(p) for p in saved["progress"]]
    recorder.batches = [BatchProgress(**b) for b in saved["batches"]]
    recorder.phases = [(name, done, total) for name, done, total in saved["phases"]]
    return Trained(root / "tiny", TrainingParams.model_validate(saved["params"]),
                   _trained_settings(root), recorder, saved["version"])


def train_once(radiography: Path, root: Path) -> Trained:
    """One tiny training that exercises every recorded option at once: a cosine schedule
    without warm-up, CLAHE and a border crop, a chest-radiograph gate even on 24 training
    films, and the promotion decision refusing a version no better than chance."""
    from shared.datasets import discover
    from worker.context import JobContext
    from worker.runner.retrain import train_and_publish

    dataset = copy_tiny(radiography, root / "tiny")
    params = TrainingParams(dataset="tiny", **{**TINY, "epochs": 3}, learning_rate=1e-3,
                            lr_schedule="cosine", warmup_fraction=0.0, equalize="clahe",
                            crop_border=0.05, gate_min_images=0)
    settings = _trained_settings(root)
    recorder = Recorder()
    version = train_and_publish(discover(dataset), params, JobContext(settings, recorder))
    return Trained(dataset, params, settings, recorder, version)


def draft(size: int = 32, classes: tuple[str, ...] = ("a", "b", "c"),
          **parts: Any) -> ManifestDraft:
    """A manifest draft with what every version has; ``parts`` set or add the rest."""
    return ManifestDraft.model_validate({
        "created_at": datetime(2026, 1, 1, tzinfo=UTC), "classes": list(classes),
        "image_size": size, "dataset": DatasetRecord(name="t"), "parent": None, **parts})


def external_report(version: str, dataset: str = "other-hospital",
                    accuracy: float = 0.8) -> ExternalReport:
    """An external evaluation report of ``version`` with only its headline figures."""
    return ExternalReport(version=version, evaluated_at=datetime(2026, 1, 2, tzinfo=UTC),
                          dataset=EvaluatedDataset(name=dataset),
                          metrics=SplitMetrics(images=5, accuracy=accuracy))


def publish_random(registry: Registry, seed: int, size: int = 32,
                   extra: dict[str, Any] | None = None,
                   files: dict[str, bytes] | None = None,
                   classes: tuple[str, ...] = ("a", "b", "c"), activate: bool = False) -> str:
    """A random-weight version; ``extra`` manifest parts and ``files`` beside the model."""
    import keras

    keras.utils.set_random_seed(seed)
    staging = registry.new_staging()
    build_model(ModelConfig(num_classes=len(classes), image_size=size)).save(
        staging / MODEL_FILE)
    for name, data in (files or {}).items():
        (staging / name).write_bytes(data)
    return registry.publish(staging, draft(size, classes, **(extra or {})), activate=activate)


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    """A zip archive of ``entries`` (member name -> content), in memory."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def wait_ready(client: TestClient, timeout: float = 60) -> None:
    """Until the app has loaded its active version (its reloader runs in the background)."""
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        if time.monotonic() > deadline:
            raise AssertionError(f"not ready after {timeout} s: {client.get('/readyz').text}")
        time.sleep(0.1)


def republish(source: Registry, version: str, target: Registry, extra: dict[str, Path],
              activate: bool = True, **updates: Any) -> str:
    """``version`` of ``source`` published again into ``target`` with ``extra`` files beside
    its own and ``updates`` to its manifest (a version as a later worker would have made it)."""
    from shared.manifest import Manifest

    manifest = source.manifest(version)
    staging = target.new_staging()
    for name in manifest.files:
        path = source.verified_file(version, name)
        assert path is not None
        shutil.copy(path, staging / name)
    for name, path in extra.items():
        shutil.copy(path, staging / name)
    sealed_only = set(Manifest.model_fields) - set(ManifestDraft.model_fields)
    draft_ = ManifestDraft.model_validate(manifest.model_dump(exclude=sealed_only))
    return target.publish(staging, draft_.model_copy(update=updates), activate=activate)


def int8_data(trained: Trained, loaded: Any) -> Any:
    """Every image of the trained version's dataset, prepared as the version was trained: a
    third as training images (calibration), and all of them as the test split."""
    import numpy as np

    from worker.publishing.int8 import Int8Data

    pixels, labels = [], []
    for label, name in enumerate(loaded.classes):
        for path in sorted((trained.dataset / name / "images").iterdir()):
            pixels.append(loaded.pixels(loaded.decode(path.read_bytes(), 10**8).gray))
            labels.append(label)
    x, y = np.stack(pixels), np.array(labels)
    return Int8Data(x[0::3], x, y, loaded.temperature, loaded.shift)


def with_int8_copy(trained: Trained, root: Path) -> tuple[LocalRegistry, str]:
    """The suite's trained version published again into ``root`` with an INT8 copy kept
    whatever its check says (limits at their loosest), and its OpenVINO check run and
    recorded as the worker does (``export_int8``), under the same limits: a version whose
    checks passed, without training one. Made once for the suite's processes (the first to
    ask makes it)."""
    from filelock import FileLock

    record = root / "int8-copy.json"
    with FileLock(f"{root}.lock"):
        if not record.is_file():
            registry, version = _make_int8_copy(trained, root)
            record.write_text(json.dumps({"version": version}))
            return registry, version
    return LocalRegistry(root / "models"), json.loads(record.read_text())["version"]


def _make_int8_copy(trained: Trained, root: Path) -> tuple[LocalRegistry, str]:
    from shared.loading import load_version
    from shared.registry.files import INT8_FILE, ONNX_FILE
    from worker.publishing.int8 import Int8Policy, export_int8

    loaded = load_version(trained.registry, trained.version)
    float_file = trained.registry.verified_file(trained.version, ONNX_FILE)
    assert float_file is not None
    folder = root / "int8"
    folder.mkdir(parents=True)
    record = export_int8(folder, float_file, int8_data(trained, loaded),
                         Int8Policy(min_agreement=0.0, max_balanced_accuracy_drop=1.0))
    registry = LocalRegistry(root / "models")
    return registry, republish(trained.registry, trained.version, registry,
                               {INT8_FILE: folder / INT8_FILE}, int8=record)


def version_dirs(registry: LocalRegistry) -> list[Path]:
    """The version folders of a local registry, whether or not they were published whole."""
    if not registry.root.is_dir():
        return []
    return sorted(p for p in registry.root.iterdir() if VERSION_PATTERN.match(p.name))
