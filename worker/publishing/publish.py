"""Writing a trained model into the registry: model file, curves, exports, card, a reload
check, then the registry's atomic publish; after it, the audit trail and pruning."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.checksums import sha256_file
from shared.config import Settings
from shared.errors import RegistryError, StorageFull, is_out_of_space
from shared.job_store import open_job_store
from shared.manifest import Int8Export, ManifestDraft, OnnxExport, Phase, Promotion, SplitRecord
from shared.ml.calibration import apply_temperature
from shared.ml.modeling import load_model, save_for_serving
from shared.monitoring.audit import AuditStore, audit_now, open_audit_store
from shared.registry import Registry
from shared.registry.base import new_version_id
from shared.registry.files import (
    CARD_HTML,
    CARD_MD,
    CURVES_FILE,
    GATE_FILE,
    MODEL_FILE,
    RELIABILITY_FILE,
    SHIFT_FILE,
)
from shared.registry.pruning import prune_candidates
from shared.usage import job_usage
from worker.context import PhaseReporter, Steps
from worker.evaluation.assessment import Assessment
from worker.evaluation.scores import reliability_diagram
from worker.publishing import onnx_export
from worker.publishing.int8 import DEFAULT_POLICY, Int8Data, Int8Policy, export_int8
from worker.publishing.model_card import card_html, card_markdown

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedVersion:
    """What publishing needs of a trained and assessed model: the model, what its files and
    manifest are drawn from, and the images its INT8 copy is calibrated and checked on."""

    model: Any
    history: dict[str, list[float]]
    phases: list[Phase]
    split: SplitRecord
    assessment: Assessment
    sample_inputs: np.ndarray  # a few test images as the model takes them: the reload check
    int8_data: Int8Data


def plot_curves(history: dict[str, list[float]], path: Path, fine_tune_from: int | None) -> None:
    """Loss and accuracy per epoch, training and validation (the paper's figures 7 and 8)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for key, style in ((metric, "-"), (f"val_{metric}", "--")):
            values = history.get(key, [])
            ax.plot(range(1, len(values) + 1), values, style, marker="o", markersize=3,
                    label="validation" if key.startswith("val_") else "training")
        if fine_tune_from:
            ax.axvline(fine_tune_from + 0.5, color="grey", linewidth=0.8, label="fine-tune starts")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
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


def _verifier(model: Any, inputs: np.ndarray) -> Callable[[Path], None]:
    """A check that a saved model file reproduces ``model``'s outputs on ``inputs``."""
    # Called, not predict(): a few images need no traced function (a second or so each).
    expected = np.asarray(model(inputs, training=False))

    def verify(model_file: Path) -> None:
        reloaded = load_model(model_file)
        got = np.asarray(reloaded(inputs, training=False))
        if not np.allclose(got, expected, atol=1e-5):
            raise RegistryError("the saved model does not reproduce the trained model's outputs")

    return verify


def _int8(trained: TrainedVersion, staging: Path, onnx: OnnxExport,
          policy: Int8Policy | None, reporter: PhaseReporter | None) -> Int8Export:
    if policy is None:
        return Int8Export(error="not made: CXR_EXPORT_INT8 is off")
    if onnx.file is None:
        return Int8Export(error="not made: no ONNX export to quantize")
    return export_int8(staging, staging / onnx.file, trained.int8_data, policy, reporter)


def _save(trained: TrainedVersion, staging: Path) -> None:
    """The model and the files drawn from training and assessment: curves, shift reference,
    gate, reliability diagram."""
    assessment = trained.assessment
    save_for_serving(trained.model, staging / MODEL_FILE)
    fine_tune_from = trained.phases[0].epochs_run if len(trained.phases) > 1 else None
    plot_curves(trained.history, staging / CURVES_FILE, fine_tune_from)
    (staging / SHIFT_FILE).write_bytes(assessment.shift.to_bytes())
    if assessment.gate is not None:
        (staging / GATE_FILE).write_bytes(assessment.gate.to_bytes())
    raw = assessment.test_probabilities
    reliability_diagram(assessment.test_labels, raw, staging / RELIABILITY_FILE,
                        title="test split reliability",
                        probabilities_after=apply_temperature(raw, assessment.temperature))


def publish_staged(registry: Registry, staging: Path, manifest: ManifestDraft,
                   verify: Callable[[Path], None], activate: bool) -> str:
    """Mint the version's id, write its card, check the staged model with ``verify`` (which
    reloads it), then hand the folder to the registry to seal, commit and activate."""
    version = new_version_id()
    write_card(staging, version, manifest)
    model_file = staging / MODEL_FILE
    verified = sha256_file(model_file)
    verify(model_file)
    if sha256_file(model_file) != verified:
        raise RegistryError("model file changed while it was being verified")
    return registry.publish(staging, manifest, version=version, activate=activate)


def _audit(store: AuditStore | None, action: str, target: str, detail: str | None) -> None:
    if store is None:
        return
    try:
        audit_now(store, actor="worker", role="worker", action=action, target=target,
                  outcome="ok", detail=detail)
    except Exception:  # the version is published: a lost record must not fail the job
        log.warning("could not write the audit record %s %s", action, target, exc_info=True)


def _open_audit(settings: Settings) -> AuditStore | None:
    try:
        return open_audit_store(settings)
    except Exception:
        log.warning("could not open the audit trail; publish not recorded", exc_info=True)
        return None


def after_publish(settings: Settings, registry: Registry, version: str, activated: bool,
                  promotion: Promotion | None = None) -> list[str]:
    """Record the publish (and its activation) in the audit trail, then prune the
    candidates beyond CXR_KEEP_CANDIDATES, never ``version`` itself nor what open jobs use.
    Returns the versions pruned. Nothing here fails the job, whose version is published."""
    audit = _open_audit(settings)
    reason = promotion.reason if promotion is not None else "published as a candidate"
    _audit(audit, "model.publish", version, "activated" if activated else reason[:200])
    if activated:
        _audit(audit, "activate", version, None)
    keep = settings.keep_candidates
    if keep is None:
        return []
    try:
        in_use = set(job_usage(open_job_store(settings)).versions)
        pruned = prune_candidates(registry, keep, in_use, published=version)
    except Exception:  # pruned at the next publish instead
        log.warning("could not prune candidates after publishing %s", version, exc_info=True)
        return []
    for gone in pruned:
        _audit(audit, "model.prune", gone, f"keep_candidates={keep}")
    return pruned


def publish_result(registry: Registry, trained: TrainedVersion, manifest: ManifestDraft,
                   activate: bool, export_onnx: bool = True,
                   int8_policy: Int8Policy | None = DEFAULT_POLICY,
                   reporter: PhaseReporter | None = None,
                   settings: Settings | None = None) -> str:
    """Save into staging, verify by reloading, and publish atomically (and activate); each
    step (saving, the exports, publishing) is reported as a phase. With ``settings``, the
    publish is audited and candidates pruned (``after_publish``)."""
    registry.clean_staging()  # what crashed publishes left, hours ago
    staging = registry.new_staging()
    try:
        saving = Steps(reporter, "saving", 1)
        _save(trained, staging)
        saving.advance()
        onnx = (onnx_export.export(trained.model, staging, trained.sample_inputs, reporter)
                if export_onnx else OnnxExport(error="not exported: CXR_EXPORT_ONNX is off"))
        manifest = manifest.model_copy(update={"onnx": onnx, "int8": _int8(
            trained, staging, onnx, int8_policy, reporter)})
        steps = Steps(reporter, "publishing", 1)
        version = publish_staged(registry, staging, manifest,
                                 _verifier(trained.model, trained.sample_inputs), activate)
        steps.advance()
    except OSError as exc:
        if is_out_of_space(exc):
            raise StorageFull(f"the models folder ran out of space while publishing: {exc}; "
                              "the registry is unchanged") from exc
        raise
    finally:
        registry.discard(staging)
    if settings is not None:
        after_publish(settings, registry, version, activate, manifest.promotion)
    return version
