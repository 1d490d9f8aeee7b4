"""What a retrain job does, one way through the worker's packages: train (``training``),
assess (``evaluation``), decide on promotion and publish (``publishing``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared.activation import chance_reason
from shared.datasets import Dataset, aligned, dataset_path, discover, match_classes
from shared.errors import JobCancelled
from shared.lineage import resolve_parent
from shared.manifest import ExternalFigures, Promotion
from shared.ml.modeling import resolve_base_weights
from shared.training_params import TrainingParams
from worker.context import JobContext
from worker.evaluation.assessment import Assessment, assess
from worker.evaluation.external import evaluate_loaded, unpublished
from worker.publishing.int8 import Int8Data, Int8Policy
from worker.publishing.manifest_draft import build_manifest
from worker.publishing.promotion import (
    Challenger,
    PromotionRule,
    decide_fine_tune,
    decide_promotion,
)
from worker.publishing.publish import TrainedVersion, publish_result
from worker.runner.fine_tune import (
    Parent,
    compare_with_parent,
    lineage,
    open_parent,
    with_parent_gate,
)
from worker.training.devices import TrainingDevices
from worker.training.fit import Start, Trained, train_model

SAMPLE_INPUTS = 4  # test images the published model's reload and ONNX export are checked on


def _stop_if_cancelled(context: JobContext) -> None:
    if context.reporter.cancel_requested():
        raise JobCancelled("cancelled before publishing")


def _external_figures(model: Any, assessment: Assessment, params: TrainingParams,
                      classes: list[str], external: Mapping[str, Dataset],
                      context: JobContext) -> dict[str, ExternalFigures]:
    """The trained model scored on each of the request's external datasets."""
    if not external:
        return {}
    served = unpublished(model, assessment, params, classes)
    return {name: evaluate_loaded(served, dataset, name, context.max_pixels,
                                  context.reporter).figures()
            for name, dataset in external.items()}


def to_publish(trained: Trained, assessment: Assessment, seed: int) -> TrainedVersion:
    """What publishing needs, and no more: of the pixels, the training images (the INT8
    copy's calibration) and the test split (its check)."""
    data = trained.data
    int8 = Int8Data(data.arrays["train"], data.arrays["test"], data.labels("test"),
                    assessment.temperature, assessment.shift, seed=seed)
    return TrainedVersion(trained.model, trained.history, trained.phases, trained.split,
                          assessment, data.model_inputs("test", SAMPLE_INPUTS), int8)


def _decide(context: JobContext, params: TrainingParams, trained: Trained,
            assessment: Assessment, classes: list[str], parent: Parent | None) -> Promotion:
    """The promotion decision (``activate`` and CXR_PROMOTION_*) on the new test split: a
    fine-tune against its parent, paired on the same images."""
    settings = context.settings
    chance = (chance_reason(assessment.reliability) if settings.promotion_refuse_chance
              else None)
    if parent is not None:
        site, on_parent = compare_with_parent(context.registry, parent, trained, assessment,
                                              params, classes, context.max_pixels,
                                              context.reporter)
        return decide_fine_tune(params.activate, settings.promotion_parent_margin, site,
                                on_parent, parent.why_no_data, chance)
    challenger = Challenger(trained.data.splits["test"], classes, assessment.metrics.test,
                            chance)
    return decide_promotion(context.registry, PromotionRule.from_settings(
        params.activate, settings), challenger, context.max_pixels)


def _fit(dataset: Dataset, params: TrainingParams, context: JobContext,
         parent: Parent | None) -> tuple[Trained, Assessment, Path | None]:
    """Train (from the base weights, or from the parent) and assess."""
    weights = resolve_base_weights(params.base_weights, context.settings)  # fails first
    devices = TrainingDevices.from_settings(context.settings)
    start = parent.start() if parent is not None else Start(weights=weights)
    trained = train_model(dataset, params, start, context, devices)
    assessment = assess(trained.model, trained.data, dataset.classes, params,
                        context.reporter, devices.scope)
    if parent is not None:
        assessment = with_parent_gate(assessment, context.registry, parent, trained.data)
    return trained, assessment, weights


def train_and_publish(dataset: Dataset, params: TrainingParams, context: JobContext,
                      external: Mapping[str, Dataset] | None = None) -> str:
    """Train on a discovered dataset (or fine-tune ``params.base_version`` on it) and
    publish the result (activated if the promotion decision agrees). ``external``: the sets
    of ``params.external_datasets`` by name, discovered (the command line's folders); when
    not given, they are found under CXR_DATA_DIR."""
    params, settings = params.seeded(), context.settings
    params, parent_manifest = resolve_parent(params, context.registry, dataset.classes,
                                             params.dataset)
    parent = None
    if parent_manifest is not None:
        dataset = aligned(dataset, list(parent_manifest.classes), params.dataset)
        parent = open_parent(context.registry, parent_manifest, settings.data_dir,
                             context.reporter)
    if external is None:  # found before training, so that a missing one fails at once
        external = {name: discover(dataset_path(settings.data_dir, name), min_classes=1)
                    for name in params.external_datasets}
    for name, other in external.items():  # and one the trained model cannot score, too
        match_classes(other.classes, dataset.classes, name)
    trained, assessment, weights = _fit(dataset, params, context, parent)
    _stop_if_cancelled(context)
    figures = _external_figures(trained.model, assessment, params, dataset.classes, external,
                                context)
    _stop_if_cancelled(context)
    active = context.registry.active()
    promotion = _decide(context, params, trained, assessment, dataset.classes, parent)
    version = to_publish(trained, assessment, params.seed or 0)
    manifest = build_manifest(version, params, dataset, weights,
                              parent=active.version if active else None, promotion=promotion,
                              external=figures, lineage=lineage(parent, dataset, params, trained)
                              if parent is not None else None)
    return publish_result(context.registry, version, manifest, activate=promotion.activated,
                          export_onnx=settings.export_onnx,
                          int8_policy=Int8Policy.from_settings(settings)
                          if settings.export_int8 else None, reporter=context.reporter,
                          settings=settings)
