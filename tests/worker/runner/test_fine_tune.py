"""A fine-tune of a published version on a site's films: it starts from the parent's
network, resumes from its checkpoint like any job, and records its lineage and the paired
proof against its parent."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from shared.config import Settings
from shared.datasets import discover
from shared.lineage import resolve_parent
from shared.ml.modeling import ModelConfig, build_model, load_model
from shared.registry.files import CARD_MD
from shared.registry.local import LocalRegistry
from shared.training_params import TrainingParams
from tests.helpers.env import AS_ADMIN
from tests.helpers.reporters import Crash, CrashAfter
from tests.helpers.versions import Recorder, Trained, republish
from worker.context import JobContext
from worker.data.parent_data import ParentData, find_parent_data
from worker.publishing.promotion import PARENT_TEST, SITE
from worker.runner.retrain import train_and_publish
from worker.training.devices import TrainingDevices
from worker.training.fit import Start, train_model


def _loss(model: object, batches: object) -> float:
    losses = []
    for x, y in batches:  # type: ignore[attr-defined]
        p = np.asarray(model.predict(x, verbose=0))  # type: ignore[attr-defined]
        losses.append(-np.log(np.maximum(p[np.arange(len(y)), np.asarray(y)], 1e-7)))
    return float(np.mean(np.concatenate(losses)))


@pytest.mark.trains
def test_a_fine_tune_starts_from_the_parents_network(trained: Trained,
                                                     tmp_path: Path) -> None:
    import keras

    registry = trained.registry
    asked = TrainingParams(dataset="tiny", base_version=trained.version, epochs=1,
                           learning_rate=1e-9, replay_fraction=0.0, batch_size=8, seed=5)
    params, parent = resolve_parent(asked, registry, discover(trained.dataset).classes, "tiny")
    assert parent is not None
    context = JobContext(Settings(models_dir=tmp_path / "m", state_dir=tmp_path / "s"),
                         Recorder())
    path = registry.verified_model_path(trained.version)
    result = train_model(discover(trained.dataset), params, Start(model_path=path), context,
                         TrainingDevices())
    validation = result.data.pipeline("validation", 8)
    # At a learning rate of 1e-9 the first epoch's validation loss is the parent's own on
    # those films (no dropout or augmentation there), not a random start's.
    parent_loss = _loss(load_model(path), validation)
    keras.utils.set_random_seed(5)
    random_loss = _loss(build_model(ModelConfig(3, 32)), validation)
    first = result.history["val_loss"][0]
    assert first == pytest.approx(parent_loss, abs=1e-4)
    assert abs(random_loss - parent_loss) > 100 * abs(first - parent_loss)
    assert [p.phase for p in result.phases] == ["site"]


@pytest.mark.trains
def test_a_fine_tune_resumes_and_records_its_lineage_and_the_paired_proof(
        trained: Trained, image_dataset_root: Path, tmp_path: Path) -> None:
    settings = Settings(models_dir=tmp_path / "models", state_dir=tmp_path / "state",
                        data_dir=tmp_path / "data", export_onnx=False)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tiny").symlink_to(trained.dataset)  # the parent's own films
    registry = LocalRegistry(settings.models_dir)
    parent = republish(trained.registry, trained.version, registry, {})
    site = settings.data_dir / "site"  # another hospital's spelling of the classes
    for label in ("COVID", "NORMAL", "VIRAL_PNEUMONIA"):
        (site / label).mkdir(parents=True)
        for path in sorted((image_dataset_root / label).iterdir())[:8]:
            shutil.copy(path, site / label / path.name)
    params = TrainingParams(dataset="site", base_version="active", epochs=2, batch_size=8,
                            seed=4)
    checkpoint = tmp_path / "checkpoint"
    with pytest.raises(Crash):
        train_and_publish(discover(site), params, JobContext(settings, CrashAfter(1),
                                                             checkpoint))
    resumed = Recorder()
    version = train_and_publish(discover(site), params, JobContext(settings, resumed,
                                                                   checkpoint))
    assert [p.epoch for p in resumed.progress] == [2]  # epoch 1 came from the checkpoint

    manifest, before = registry.manifest(version), registry.manifest(parent)
    lineage = manifest.lineage
    assert lineage is not None and lineage.parent == parent
    assert lineage.added == {"site": {"COVID": 8, "Normal": 8, "Viral Pneumonia": 8}}
    assert lineage.parent_test == before.metrics.test and lineage.parent_data is None
    assert manifest.classes == before.classes and manifest.image_size == before.image_size
    assert manifest.preprocessing_options == before.preprocessing_options
    train = manifest.split.train
    assert train is not None and train.sources is not None
    assert lineage.replayed is not None and manifest.training is not None
    # replay_fraction of the training images are the parent's
    fraction = manifest.training.replay_fraction
    assert sum(lineage.replayed.values()) == train.sources["replay:tiny"] == round(
        train.sources["site"] * fraction / (1 - fraction))
    promotion = manifest.promotion
    assert promotion is not None and promotion.paired is not None
    assert set(promotion.paired) == {SITE, PARENT_TEST}
    assert promotion.paired[PARENT_TEST].images == sum(before.split.test.counts.values())  # type: ignore[union-attr]
    assert promotion.paired[SITE].second == parent
    # the child's own films are found again, in its spelling, for a fine-tune of it
    again = find_parent_data(manifest, settings.data_dir)
    assert isinstance(again, ParentData), again
    assert len(again.test.labels) == sum(manifest.split.test.counts.values())  # type: ignore[union-attr]
    card = (registry.verified_file(version, CARD_MD) or Path()).read_text()
    assert "## Lineage" in card and f"Fine-tuned from version {parent}" in card
    with TestClient(create_app(settings), headers=AS_ADMIN) as client:
        detail = client.get(f"/models/{version}").json()
        listed = client.get("/models").json()["versions"]
    assert detail["lineage"]["parent"] == parent
    assert detail["promotion"]["paired"][SITE]["difference_ci"] is not None
    assert next(v for v in listed if v["version"] == version)["lineage"]["parent"] == parent
