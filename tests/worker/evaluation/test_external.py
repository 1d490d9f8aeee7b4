"""External evaluation: it stops between chunks when its job is cancelled, a set whose
classes the version lacks is refused by name before the version is loaded, and the answers
marked reliable are counted per class."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.datasets import Dataset, discover
from shared.errors import InvalidDataset, JobCancelled
from shared.ml.reliability import ReliabilityRecord
from shared.ml.served import SCORE_BATCH
from shared.registry.local import LocalRegistry
from tests.helpers.reporters import CancelAfter
from tests.helpers.versions import publish_random
from worker.evaluation.external import evaluate_external

CLASSES = ("COVID", "Normal", "Viral Pneumonia")
PHASE = "evaluation on other"


def test_a_cancelled_evaluation_stops_after_the_chunk_it_was_scoring(
        tmp_path: Path, tiny_dataset: Path) -> None:
    registry = LocalRegistry(tmp_path / "models")
    version = publish_random(registry, seed=3, classes=CLASSES)
    dataset = discover(tiny_dataset)  # 36 films: a chunk of 32, then 4
    reporter = CancelAfter(1)
    with pytest.raises(JobCancelled, match=f"cancelled during {PHASE}"):
        evaluate_external(registry, version, dataset, "other", 10**7, reporter)
    assert reporter.phases == [(PHASE, 0, 36), (PHASE, SCORE_BATCH, 36)]
    # not asked to stop, it scores every chunk
    everything = CancelAfter(37)
    report = evaluate_external(registry, version, dataset, "other", 10**7, everything)
    assert report.metrics.images == 36 and everything.phases[-1] == (PHASE, 36, 36)


def test_a_set_with_a_class_the_version_lacks_is_refused_by_name(
        tmp_path: Path, tiny_dataset: Path) -> None:
    registry = LocalRegistry(tmp_path / "models")
    version = publish_random(registry, seed=3, classes=CLASSES)
    films = discover(tiny_dataset).files["COVID"]
    tb = Dataset(root=tiny_dataset, layout="class-folders", files={"Tuberculosis": films})
    with pytest.raises(InvalidDataset, match=r"^dataset 'tb': classes \['Tuberculosis'\]"):
        evaluate_external(registry, version, tb, "tb", 10**7)


def test_a_comparison_scores_both_versions_on_the_same_images(
        tmp_path: Path, tiny_dataset: Path) -> None:
    registry = LocalRegistry(tmp_path / "models")
    first = publish_random(registry, seed=3, classes=CLASSES)
    second = publish_random(registry, seed=4, classes=CLASSES)
    dataset = discover(tiny_dataset)
    alone = evaluate_external(registry, first, dataset, "other", 10**7)
    report = evaluate_external(registry, first, dataset, "other", 10**7, compare=second)
    compared = report.comparison
    assert compared is not None and (compared.first, compared.second) == (first, second)
    assert compared.images == 36
    assert compared.first_balanced_accuracy == pytest.approx(alone.metrics.balanced_accuracy)
    theirs = evaluate_external(registry, second, dataset, "other", 10**7)
    assert compared.second_balanced_accuracy == pytest.approx(theirs.metrics.balanced_accuracy)
    assert compared.difference == pytest.approx(
        (alone.metrics.balanced_accuracy or 0) - (theirs.metrics.balanced_accuracy or 0))
    # against itself: no image tells them apart
    itself = evaluate_external(registry, first, dataset, "other", 10**7, compare=first)
    assert itself.comparison is not None and itself.comparison.difference_ci == [0.0, 0.0]


def test_the_reliable_answers_are_counted_per_class_beside_all_of_them(
        tmp_path: Path, tiny_dataset: Path) -> None:
    registry = LocalRegistry(tmp_path / "models")
    # a random version's answers hover near a third (0.36 to 0.40 here): 0.375 marks some
    record = ReliabilityRecord(confidence_threshold=0.375, confidence_coverage=0.5,
                               chance=1 / 3, balanced_accuracy_ci=[0.5, 0.7],
                               better_than_chance=True)
    version = publish_random(registry, seed=3, classes=CLASSES, extra={"reliability": record})
    report = evaluate_external(registry, version, discover(tiny_dataset), "other", 10**7)
    subset = report.reliability
    assert subset is not None and list(subset.per_class) == list(CLASSES)
    rows = subset.per_class.values()
    assert [row.images for row in rows] == [12, 12, 12]
    assert sum(row.reliable for row in rows) == round(subset.coverage * 36)
    assert 0 < subset.coverage < 1  # both kinds present: the figures compare something
    for label, row in subset.per_class.items():
        assert row.recall == report.metrics.per_class[label].sensitivity
        assert (row.reliable_recall is None) == (row.reliable == 0)
