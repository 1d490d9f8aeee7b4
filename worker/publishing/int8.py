"""An INT8 copy of each version's ONNX export, kept only when it answers as the float model does.

ONNX Runtime's static quantization (QDQ format, per-channel weights, activation ranges
calibrated on a seeded sample of the version's own training images) makes the copy of the
convolutional base; the head, whose features the shift score also reads, stays in float.
Before the version is published the copy is scored beside the float export on the version's
test split: top-1 agreement, balanced accuracy of each, the largest probability difference,
and whether the shift score (the version's one reference, on each model's features) flags
the same images. It is kept only within the limits
(``CXR_INT8_MIN_AGREEMENT``, ``CXR_INT8_MAX_BALANCED_ACCURACY_DROP``); otherwise the version is
published without it, with the figures and the reason in its manifest. A kept copy is then
checked the same way in OpenVINO (same images, same limits); OpenVINO may serve it only where
that passed, and whatever happens there is recorded, never a reason not to publish.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.config import Int8Calibration, Settings
from shared.errors import JobCancelled, is_out_of_space
from shared.manifest import Int8Check, Int8Export, RuntimeCheck
from shared.ml.calibration import apply_temperature
from shared.ml.preprocessing import to_model_input
from shared.ml.runtimes import OnnxForward, OpenVinoForward, openvino_version
from shared.ml.shift import ShiftReference, input_features
from shared.registry.files import INT8_FILE
from worker.context import PhaseReporter, Steps

log = logging.getLogger(__name__)

# The convolutional base in INT8 (unsigned activations and signed weights: the pair ONNX
# Runtime's x86 kernels, VNNI, are fastest at); the head in float. Quantizing every op also
# put the softmax on 256 levels and the shift statistics' squares on a coarse grid: on a
# weak 224 px version, top-1 agreement fell to 91% against 99% with the head in float, at
# the same speed (bench/results/findings.md).
QUANTIZED_OPS = ["Conv", "Relu", "MaxPool"]
SCHEME = ("static QDQ (ONNX Runtime) of the convolutional base (Conv, Relu, MaxPool): "
          "per-channel int8 weights, uint8 activations; pooling, statistics, dense layer "
          "and softmax in float")
CHUNK = 16  # images per pass while calibrating and checking


@dataclass(frozen=True)
class Int8Policy:
    """How the copy is made and when it is kept."""

    calibration: Int8Calibration = "minmax"
    calibration_images: int = 64
    min_agreement: float = 0.99
    max_balanced_accuracy_drop: float = 0.005

    @classmethod
    def from_settings(cls, settings: Settings) -> Int8Policy:
        return cls(settings.int8_calibration, settings.int8_calibration_images,
                   settings.int8_min_agreement, settings.int8_max_balanced_accuracy_drop)


DEFAULT_POLICY = Int8Policy()


@dataclass(frozen=True)
class Int8Data:
    """What the copy is calibrated on (a sample of ``train``, the version's training images)
    and checked on (``test`` and its labels), with the version's temperature and shift
    reference, and the sampling seed; pixels as the version was trained."""

    train: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray
    temperature: float
    shift: ShiftReference | None
    seed: int = 0


def calibration_sample(pixels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """A seeded sample of ``count`` images (all of them when there are fewer), in order."""
    if len(pixels) <= count:
        return pixels
    chosen = np.random.default_rng(seed).choice(len(pixels), size=count, replace=False)
    return pixels[np.sort(chosen)]


def quantize(float_file: Path, target: Path, calibration: np.ndarray,
             method: Int8Calibration, input_name: str, steps: Steps | None = None) -> None:
    """Write the statically quantized copy of ``float_file`` (whose input is ``input_name``)
    to ``target``; each calibration image read counts as a step done."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            # One image a batch: the histogram methods (entropy, percentile) fail on batches
            # of unequal sizes in ONNX Runtime 1.32.
            self.batches = ({input_name: to_model_input(image[None])} for image in calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            if batch is not None and steps is not None:
                steps.advance()
            return batch

    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        # Shape inference and graph fusions first, as ONNX Runtime's guide prescribes.
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(float_file), str(prepared))
        quantize_static(str(prepared), str(target), Reader(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=QUANTIZED_OPS, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=methods[method])


Outputs = tuple[np.ndarray, np.ndarray]  # features and calibrated probabilities


def outputs_of(model: Any, pixels: np.ndarray, temperature: float,
               steps: Steps | None) -> Outputs:
    """Features and calibrated probabilities of every image, a chunk at a time."""
    features, probabilities = [], []
    for chunk in _chunks(pixels):
        f, raw = model(to_model_input(chunk))
        features.append(np.asarray(f))
        probabilities.append(apply_temperature(np.asarray(raw), temperature))
        if steps is not None:
            steps.advance(len(chunk))
    return np.concatenate(features), np.concatenate(probabilities)


def compare(float_outputs: Outputs, int8_outputs: Outputs, data: Int8Data) -> Int8Check:
    """The copy's answers (``int8_outputs``, on the test split) beside the float model's."""
    from sklearn.metrics import balanced_accuracy_score

    pixels, labels = data.test, data.test_labels
    (ff, pf), (fq, pq) = float_outputs, int8_outputs
    top_f, top_q = pf.argmax(1), pq.argmax(1)
    flag_agreement = score_gap = None
    if data.shift is not None:
        inputs = input_features(pixels) if data.shift.needs_inputs else None
        sf, sq = data.shift.scores(ff, inputs), data.shift.scores(fq, inputs)
        threshold = data.shift.threshold
        flag_agreement = float(np.mean((sf > threshold) == (sq > threshold)))
        score_gap = float(np.max(np.abs(sf - sq)))
    return Int8Check(
        images=len(pf), top1_agreement=float(np.mean(top_f == top_q)),
        balanced_accuracy_float=float(balanced_accuracy_score(labels, top_f)),
        balanced_accuracy_int8=float(balanced_accuracy_score(labels, top_q)),
        max_probability_difference=float(np.max(np.abs(pf - pq))),
        shift_flag_agreement=flag_agreement, max_shift_score_difference=score_gap)


def refusals(check: Int8Check, policy: Int8Policy) -> list[str]:
    """Why the copy may not serve; empty when it may."""
    why = []
    if check.top1_agreement < policy.min_agreement:
        why.append(f"top-1 agreement {check.top1_agreement:.2%} is below "
                   f"{policy.min_agreement:.2%}")
    drop = check.balanced_accuracy_float - check.balanced_accuracy_int8
    if drop > policy.max_balanced_accuracy_drop + 1e-9:  # a drop at the limit is within it
        why.append(f"balanced accuracy drops by {100 * drop:.2f} points, more than "
                   f"{100 * policy.max_balanced_accuracy_drop:.2f}")
    if check.shift_flag_agreement is not None and check.shift_flag_agreement < policy.min_agreement:
        why.append(f"the shift flag agrees on {check.shift_flag_agreement:.2%} of images, "
                   f"below {policy.min_agreement:.2%}")
    return why


def check_openvino(int8_file: Path, float_outputs: Outputs, data: Int8Data,
                   policy: Int8Policy, steps: Steps | None = None) -> RuntimeCheck:
    """The INT8 copy's check run again with OpenVINO on the same file, beside the float
    export's ``float_outputs`` on the same test images, under the same limits. Any failure
    (OpenVINO missing, a graph it cannot read) is recorded as the check's error."""
    made = RuntimeCheck(runtime="openvino", runtime_version=openvino_version())
    if made.runtime_version is None:
        return made.model_copy(update={"error": "not checked: openvino is not installed"})
    started = time.monotonic()
    try:
        outputs = outputs_of(OpenVinoForward(int8_file, with_features=True), data.test,
                             data.temperature, steps)
        check = compare(float_outputs, outputs, data)
    except JobCancelled:
        raise
    except Exception as exc:  # OpenVINO's failure is recorded; the version still publishes
        log.warning("OpenVINO check failed: %s", exc)
        return made.model_copy(update={"error": f"OpenVINO failed: {exc}"})
    made = made.model_copy(update={"check": check,
                                   "seconds": round(time.monotonic() - started, 1)})
    if why := refusals(check, policy):
        log.info("OpenVINO may not serve the INT8 copy: %s", "; ".join(why))
        return made.model_copy(update={"error": "not passed: " + "; ".join(why)})
    return made.model_copy(update={"passed": True})


def export_int8(folder: Path, float_file: Path, data: Int8Data, policy: Int8Policy,
                reporter: PhaseReporter | None = None) -> Int8Export:
    """Make ``folder/model.int8.onnx``, check it, and keep it only within the policy's limits,
    then check the kept copy in OpenVINO; returns what the manifest records. Its images
    (calibrating, then checking with both models, then with OpenVINO) are reported as the
    phase "int8 copy"."""
    calibration = calibration_sample(data.train, policy.calibration_images, data.seed)
    made = Int8Export(scheme=SCHEME, calibration=policy.calibration,
                      calibration_images=len(calibration), min_agreement=policy.min_agreement,
                      max_balanced_accuracy_drop=policy.max_balanced_accuracy_drop)
    if len(data.test_labels) == 0:
        return made.model_copy(update={"error": "not kept: no test images to check it on"})
    target = folder / INT8_FILE
    started = time.monotonic()
    steps = Steps(reporter, "int8 copy", len(calibration) + 3 * len(data.test_labels))
    try:
        float_model = OnnxForward(float_file, with_features=True)
        quantize(float_file, target, calibration, policy.calibration, float_model.input, steps)
        float_outputs = outputs_of(float_model, data.test, data.temperature, steps)
        check = compare(float_outputs, outputs_of(
            OnnxForward(target, with_features=True), data.test, data.temperature, steps), data)
    except Exception as exc:  # the quantizer fails in many ways; the version still serves
        target.unlink(missing_ok=True)
        if isinstance(exc, JobCancelled) or is_out_of_space(exc):  # as the ONNX export
            raise
        log.warning("no INT8 copy: %s", exc)
        return made.model_copy(update={"error": f"quantization failed: {exc}"})
    made = made.model_copy(update={"check": check,
                                   "seconds": round(time.monotonic() - started, 1)})
    if why := refusals(check, policy):
        target.unlink()
        log.info("INT8 copy not kept: %s", "; ".join(why))
        _finish(steps)  # no OpenVINO check without a copy
        return made.model_copy(update={"error": "not kept: " + "; ".join(why)})
    openvino = check_openvino(target, float_outputs, data, policy, steps)
    _finish(steps)  # OpenVINO's images, where it checked none
    return made.model_copy(update={"file": INT8_FILE, "openvino": openvino})


def _finish(steps: Steps) -> None:
    """The phase's remaining steps, skipped, so that it ends (once)."""
    if steps.done < steps.total:
        steps.advance(steps.total - steps.done)


def _chunks(pixels: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, len(pixels), CHUNK):
        yield pixels[start:start + CHUNK]
