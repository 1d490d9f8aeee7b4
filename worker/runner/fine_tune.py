"""What a fine-tune of a published version adds to a retrain job: its parent's network and
films to start from, its parent's gate where the site's films are too few to fit one, and
the proof against its parent on the same images."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from shared.datasets import Dataset
from shared.loading import load_version
from shared.manifest import Lineage, Manifest, PairedComparison
from shared.ml.chest_gate import ChestGate
from shared.paired import paired_comparison
from shared.registry import Registry
from shared.registry.files import GATE_FILE
from shared.training_params import TrainingParams
from worker.context import PhaseReporter, Steps
from worker.data.parent_data import ParentData, find_parent_data
from worker.data.pipeline import load_split_pixels
from worker.data.prepared import Prepared
from worker.evaluation.assessment import Assessment, gate_refusals
from worker.evaluation.external import unpublished
from worker.training.fit import Start, Trained


@dataclass(frozen=True)
class Parent:
    """The version a fine-tune starts from, and its own films where they can be had."""

    manifest: Manifest
    model_path: Path
    data: ParentData | None
    why_no_data: str | None = None  # why its films are not used, when they are not

    @property
    def version(self) -> str:
        return self.manifest.version

    def start(self) -> Start:
        """Its whole network, and its training split to replay."""
        return Start(model_path=self.model_path, replay=self.data.train if self.data else None,
                     replay_source=self.replay_source)

    @property
    def replay_source(self) -> str:
        """The source its replayed images are recorded as, apart from the site's."""
        return f"replay:{self.data.dataset if self.data else self.manifest.dataset.name}"


def open_parent(registry: Registry, manifest: Manifest, data_dir: Path,
                reporter: PhaseReporter | None = None) -> Parent:
    """The parent's verified model file and, when still stored and unchanged, its films
    (the phase "the parent's films": its split is made again, near-duplicates and all)."""
    steps = Steps(reporter, "the parent's films", 1)
    found = find_parent_data(manifest, data_dir)
    steps.advance()
    return Parent(manifest, registry.verified_model_path(manifest.version),
                  found if isinstance(found, ParentData) else None,
                  found if isinstance(found, str) else None)


def with_parent_gate(assessment: Assessment, registry: Registry, parent: Parent,
                     data: Prepared) -> Assessment:
    """The assessment with the parent's chest-radiograph gate when none was fitted (too few
    of the site's films): one fitted on a few dozen refuses unseen films of its own site.
    Its refusals are counted on the child's splits."""
    if assessment.gate is not None:
        return assessment
    path = registry.verified_file(parent.version, GATE_FILE)
    if path is None:
        return assessment
    gate = ChestGate.load(path)
    return replace(assessment, gate=gate, gate_refusals=gate_refusals(gate, data))


def compare_with_parent(registry: Registry, parent: Parent, trained: Trained,
                        assessment: Assessment, params: TrainingParams, classes: list[str],
                        max_pixels: int, reporter: PhaseReporter | None = None
                        ) -> tuple[PairedComparison, PairedComparison | None]:
    """The child and its parent on the same images: the site's test split, and the parent's
    own test split when it could be made again (the two steps of the phase "comparison with
    the parent")."""
    steps = Steps(reporter, "comparison with the parent", 2)
    child = unpublished(trained.model, assessment, params, classes)
    old = load_version(registry, parent.version)
    names = ("this version", parent.version)

    def on(pixels: np.ndarray, labels: np.ndarray) -> PairedComparison:
        return paired_comparison(labels, _predicted(child, pixels), _predicted(old, pixels),
                                 names, seed=params.seed or 0)

    data = trained.data
    site = on(data.arrays["test"], data.labels("test"))
    steps.advance()
    if parent.data is None:
        steps.advance()
        return site, None
    pixels = load_split_pixels(parent.data.test, params.image_size, max_pixels,
                               params.preprocess_options)
    own = on(pixels, parent.data.test.labels)
    steps.advance()
    return site, own


def _predicted(model: Any, pixels: np.ndarray) -> np.ndarray:
    return np.asarray(np.asarray(model.score(pixels).probabilities).argmax(axis=1))


def lineage(parent: Parent, dataset: Dataset, params: TrainingParams,
            trained: Trained) -> Lineage:
    """What the manifest and card say of where the version comes from."""
    names = [params.dataset, *params.datasets]
    added = {name: {label: sum(dataset.sources.get(p, params.dataset) == name for p in paths)
                    for label, paths in dataset.files.items()} for name in names}
    train = trained.data.splits["train"]
    replayed = None
    if parent.data is not None and params.replay_fraction:
        mask = np.array([source == parent.replay_source for source in train.sources],
                        bool)
        counts = np.bincount(train.labels[mask], minlength=len(dataset.classes))
        replayed = dict(zip(dataset.classes, counts.tolist(), strict=True))
    return Lineage(parent=parent.version, parent_dataset=parent.manifest.dataset.name,
                   added=added, replayed=replayed, parent_data=parent.why_no_data,
                   parent_test=parent.manifest.metrics.test)
