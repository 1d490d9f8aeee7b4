"""Writing a trained model into the registry: model file, curves, manifest, atomic publish."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from shared.checksums import sha256_file
from shared.datasets import Dataset
from shared.errors import RegistryError, StorageFull, is_out_of_space
from shared.manifest import (
    BaseWeightsRecord,
    Calibration,
    DatasetRecord,
    ExternalFigures,
    GateRecord,
    Int8Export,
    ManifestDraft,
    OnnxExport,
    Promotion,
    ShiftRecord,
    TrainingRecord,
)
from shared.ml.calibration import apply_temperature
from shared.ml.modeling import load_model, save_for_serving
from shared.ml.preprocessing import preprocessing_id
from shared.registry import Registry
from shared.registry.files import (
    CARD_HTML,
    CARD_MD,
    CURVES_FILE,
    GATE_FILE,
    MODEL_FILE,
    RELIABILITY_FILE,
    SHIFT_FILE,
)
from shared.training_params import TrainingParams
from worker.context import PhaseReporter, Steps
from worker.evaluation.scores import reliability_diagram, temperature_at_bound
from worker.publishing import onnx_export
from worker.publishing.int8 import DEFAULT_POLICY, Int8Data, Int8Policy, export_int8
from worker.publishing.model_card import card_html, card_markdown
from worker.training.fit import TrainingResult

LIBRARIES = ("tensorflow", "keras", "numpy", "pillow", "celery")


def plot_curves(history: dict[str, list[float]], path: Path, fine_tune_from: int | None) -> None:
    """Loss and accuracy per epoch, training and validation (the paper's figures 7 and 8)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for key, style in ((metric, "-"), (f"val_{metric}", "--")):
            values = history.get(key, [])
            ax.plot(range(1, len(values) + 1), values, style, marker="o", markersize=3,
                    label="validation" if key.startswith("val_") else "training")
        if fine_tune_from:
            ax.axvline(fine_tune_from + 0.5, color="grey", linewidth=0.8, label="fine-tune starts")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(f"model {metric}")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def write_card(folder: Path, version: str, manifest: ManifestDraft) -> None:
    """The model card, as Markdown and as a standalone HTML page."""
    markdown = card_markdown(version, manifest)
    (folder / CARD_MD).write_text(markdown)
    (folder / CARD_HTML).write_text(card_html(markdown, f"Model card {version}"))


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def build_manifest(result: TrainingResult, params: TrainingParams, dataset: Dataset,
                   weights: Path | None, parent: str | None, promotion: Promotion,
                   external: dict[str, ExternalFigures] | None = None) -> ManifestDraft:
    """Everything a user needs to judge and reproduce the version (registry adds checksums)."""
    test = result.metrics.test
    return ManifestDraft(
        created_at=datetime.now(UTC),
        parent=parent,
        classes=dataset.classes,
        image_size=params.image_size,
        preprocessing=preprocessing_id(params.preprocess_options),
        preprocessing_options=params.preprocess_options.as_dict(),
        architecture="vgg16-gap-dropout-dense",
        training=TrainingRecord(**params.model_dump(), phases=result.phases),
        base_weights=BaseWeightsRecord(choice=params.base_weights,
                                       sha256=sha256_file(weights) if weights else None),
        dataset=DatasetRecord(name=params.dataset, fingerprint=dataset.fingerprint(),
                              layout=dataset.layout,
                              counts={k: len(v) for k, v in dataset.files.items()}),
        sources={name: {label: sum(dataset.sources.get(p) == name for p in paths)
                        for label, paths in dataset.files.items()}
                 for name in (params.dataset, *params.datasets)} if dataset.sources else None,
        split=result.split,
        metrics=result.metrics,
        calibration=Calibration(temperature=result.temperature,
                                at_bound=temperature_at_bound(result.temperature),
                                ece_before=test.ece_uncalibrated if test else None,
                                ece_after=test.ece if test else None),
        history=result.history,
        libraries=library_versions(),
        promotion=promotion,
        distribution_shift=ShiftRecord(
            method="largest of detectors standardized on validation (median, IQR): "
                   "Mahalanobis distances to the nearest class mean (Ledoit-Wolf) on block "
                   "feature statistics and on the input's low-level features; logit energy",
            features="+".join([d.name for d in result.shift.detectors]
                              + (["energy"] if result.shift.energy else [])),
            layout=result.shift.layout, fitted_on="train", threshold=result.shift.threshold,
            threshold_quantile_of_validation=result.shift.quantile,
            test_flag_rate=test.shift_flag_rate if test else None),
        reliability=result.reliability,
        chest_xray_gate=GateRecord(
            method="logistic regression of low-level image features, training "
                   "radiographs against generated non-radiographs; colour images refused",
            fitted_on="train", threshold=result.gate.threshold) if result.gate else GateRecord(
            reason=f"not fitted: fewer than {params.gate_min_images} training images"),
        external_evaluations=external or None,
    )


def _verifier(expected: np.ndarray, inputs: np.ndarray) -> Any:
    def verify(model_file: Path) -> None:
        reloaded = load_model(model_file)
        got = np.asarray(reloaded(inputs, training=False))
        if not np.allclose(got, expected, atol=1e-5):
            raise RegistryError("the saved model does not reproduce the trained model's outputs")

    return verify


def _int8(result: TrainingResult, staging: Path, onnx: OnnxExport,
          policy: Int8Policy | None, reporter: PhaseReporter | None) -> Int8Export:
    if policy is None:
        return Int8Export(error="not made: CXR_EXPORT_INT8 is off")
    if onnx.file is None:
        return Int8Export(error="not made: no ONNX export to quantize")
    data = Int8Data(result.pixels, result.labels, result.temperature, result.shift,
                    seed=result.split.seed or 0)
    return export_int8(staging, staging / onnx.file, data, policy, reporter)


def _save(result: TrainingResult, staging: Path) -> None:
    """The model and the files drawn from the training result: curves, shift reference,
    gate, reliability diagram."""
    save_for_serving(result.model, staging / MODEL_FILE)
    fine_tune_from = result.phases[0].epochs_run if len(result.phases) > 1 else None
    plot_curves(result.history, staging / CURVES_FILE, fine_tune_from)
    (staging / SHIFT_FILE).write_bytes(result.shift.to_bytes())
    if result.gate is not None:
        (staging / GATE_FILE).write_bytes(result.gate.to_bytes())
    reliability_diagram(result.test.labels, result.test_probabilities,
                        staging / RELIABILITY_FILE, title="test split reliability",
                        probabilities_after=apply_temperature(result.test_probabilities,
                                                              result.temperature))


def publish_result(registry: Registry, result: TrainingResult, manifest: ManifestDraft,
                   activate: bool, export_onnx: bool = True,
                   int8_policy: Int8Policy | None = DEFAULT_POLICY,
                   reporter: PhaseReporter | None = None) -> str:
    """Save into staging, verify by reloading, and publish atomically (and activate); each
    step (saving, the exports, publishing) is reported as a phase."""
    registry.clean_staging()  # what crashed publishes left, hours ago
    staging = registry.new_staging()
    try:
        saving = Steps(reporter, "saving", 1)
        _save(result, staging)
        saving.advance()
        onnx = (onnx_export.export(result.model, staging, result.sample_inputs, reporter)
                if export_onnx else OnnxExport(error="not exported: CXR_EXPORT_ONNX is off"))
        manifest = manifest.model_copy(update={"onnx": onnx, "int8": _int8(
            result, staging, onnx, int8_policy, reporter)})
        steps = Steps(reporter, "publishing", 1)
        # Called, not predict(): a few images need no traced function (a second or so each).
        expected = np.asarray(result.model(result.sample_inputs, training=False))
        verify = _verifier(expected, result.sample_inputs)
        version = registry.publish(staging, manifest, verify=verify, activate=activate,
                                   render=write_card)
        steps.advance()
        return version
    except OSError as exc:
        if is_out_of_space(exc):
            raise StorageFull(f"the models folder ran out of space while publishing: {exc}; "
                              "the registry is unchanged") from exc
        raise
    finally:
        registry.discard(staging)
