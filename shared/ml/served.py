"""A published version as it serves: checksum-verified, warmed up, immutable, thread-safe.

One forward pass gives the class probabilities (temperature-calibrated) and, when the version
has a shift reference, the features that score how far the image lies from the training
distribution. ``serve_model`` builds one from a model in memory (a trained model before it
is published); ``shared.loading.load_version`` from the registry.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shared.config import InferenceRuntime, Precision
from shared.errors import NotAChestXray
from shared.ml.calibration import apply_temperature
from shared.ml.chest_gate import ChestGate
from shared.ml.preprocessing import (
    DecodedImage,
    PreprocessOptions,
    decode_image,
    gray_to_pixels,
    to_model_input,
)
from shared.ml.reliability import ReliabilityRecord, reasons
from shared.ml.runtimes import Forward, Timings, choose_runtime, runtime_and_precision
from shared.ml.shift import ShiftReference, input_features
from shared.schemas import ChestXrayCheck, DistributionShift, Prediction


@dataclass
class Inference:
    """Calibrated probabilities of a batch and, where the version has one, shift scores."""

    probabilities: np.ndarray
    shift_scores: np.ndarray | None


@dataclass(frozen=True, eq=False)
class ServedVersion:
    """What a version needs to answer, fixed once it is loaded (``eq=False``: a version is
    itself, so it can key a cache)."""

    version: str
    classes: list[str]
    image_size: int
    model: Any
    forward: Forward = field(repr=False)
    runtime: str = "tensorflow"
    precision: str = "float32"  # or "int8": the version's checked INT8 copy
    # The largest batch worth gathering for this version in its runtime.
    batch_size: int = 1
    # Fitted on the validation split at training time; 1.0 leaves the softmax as it is.
    temperature: float = 1.0
    options: PreprocessOptions = field(default_factory=PreprocessOptions)
    shift: ShiftReference | None = None
    gate: ChestGate | None = None
    reliability: ReliabilityRecord | None = None
    # One inference at a time per version: two concurrent VGG16 passes only fight for cores.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def decode(self, data: bytes, max_pixels: int) -> DecodedImage:
        """An image file decoded as this version was trained (at reduced size, if so)."""
        return decode_image(data, max_pixels, self.options.decode_floor(self.image_size))

    def pixels(self, gray: np.ndarray) -> np.ndarray:
        """A decoded gray image prepared exactly as this version was trained."""
        return gray_to_pixels(gray, self.image_size, self.options)

    def screen(self, image: DecodedImage, mode: str) -> tuple[np.ndarray, ChestXrayCheck | None]:
        """The image's pixels and the chest-radiograph gate's verdict on them; with mode
        'refuse', an image that fails is refused (NotAChestXray) before any diagnosis."""
        pixels = self.pixels(image.gray)
        if mode == "off" or self.gate is None:
            return pixels, None
        check = self.gate.check(pixels[..., 0], image.colourfulness)
        if not check.passed and mode == "refuse":
            raise NotAChestXray(f"this does not look like a chest radiograph ({check.reason}); "
                                "no diagnosis is given")
        return pixels, check

    def infer(self, pixels: np.ndarray) -> Inference:
        """One pass over a batch of (n, size, size, 3) pixels in [0, 255]."""
        batch = to_model_input(pixels)
        with self.lock:
            outputs = self.forward(batch)
        if self.shift is None:
            return self.calibrated(np.asarray(outputs), None, pixels)
        features, raw = (np.asarray(t) for t in outputs)
        return self.calibrated(raw, features, pixels)

    def calibrated(self, raw: np.ndarray, features: np.ndarray | None,
                   pixels: np.ndarray) -> Inference:
        """A pass's softmax outputs temperature-scaled, and its features (with its input
        ``pixels``, where the reference reads them too) shift-scored."""
        probabilities = (apply_temperature(raw, self.temperature)
                         if self.temperature != 1.0 else raw)
        if self.shift is None or features is None:
            return Inference(probabilities, None)
        inputs = input_features(pixels) if self.shift.needs_inputs else None
        return Inference(probabilities, self.shift.scores(features, inputs))

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        return self.infer(pixels).probabilities

    def predict(self, gray: np.ndarray) -> Prediction:
        """The answer for one decoded image: label, calibrated probabilities, shift."""
        return self.predict_batch(self.pixels(gray)[None])[0]

    def predict_batch(self, pixels: np.ndarray) -> list[Prediction]:
        """The answers for a batch of prepared pixels, one forward pass for all."""
        result = self.infer(pixels)
        return [self.answer(result, i) for i in range(len(pixels))]

    def answer(self, result: Inference, i: int) -> Prediction:
        """The ``i``-th image's answer from a batch's pass."""
        probabilities = {label: float(p) for label, p in
                         zip(self.classes, result.probabilities[i], strict=True)}
        shift = None
        if self.shift is not None and result.shift_scores is not None:
            score = float(result.shift_scores[i])
            shift = DistributionShift(score=score, threshold=self.shift.threshold,
                                      flagged=score > self.shift.threshold)
        why = reasons(max(probabilities.values()), shift is not None and shift.flagged,
                      self.reliability)
        return Prediction(label=max(probabilities, key=probabilities.__getitem__),
                          probabilities=probabilities, model_version=self.version,
                          reliable=not why, reasons=why, distribution_shift=shift,
                          confidence_threshold=self.reliability.confidence_threshold
                          if self.reliability else None, precision=self.precision)


def with_check(prediction: Prediction, check: ChestXrayCheck | None) -> Prediction:
    """An answer with the gate's verdict; one that did not pass is not a finding."""
    if check is None:
        return prediction
    why = prediction.reasons if check.passed else ["not_a_chest_xray", *prediction.reasons]
    return prediction.model_copy(update={"chest_xray": check, "reasons": why,
                                         "reliable": not why})


def serve_model(version: str, classes: list[str], image_size: int, model: Any, *,
                temperature: float = 1.0, options: PreprocessOptions | None = None,
                shift: ShiftReference | None = None, gate: ChestGate | None = None,
                reliability: ReliabilityRecord | None = None, onnx_file: Path | None = None,
                runtime: InferenceRuntime = "tensorflow", warm_batch_sizes: Sequence[int] = (1,),
                threads: int | None = None, timings: Timings | None = None,
                int8_file: Path | None = None, precision: Precision = "auto") -> ServedVersion:
    """A model ready to answer: its runtime and batch size chosen by timing every batch size
    it will be asked for, which also warms each one up, so no request pays for a first call."""
    choice = choose_runtime(model, image_size, shift.layout if shift else None, onnx_file,
                            runtime, threads, warm_batch_sizes, timings, name=version,
                            int8_file=int8_file, precision=precision)
    served_runtime, served_precision = runtime_and_precision(choice.runtime)
    return ServedVersion(version=version, classes=classes, image_size=image_size, model=model,
                         forward=choice.forward, runtime=served_runtime,
                         precision=served_precision,
                         batch_size=choice.batch_size, temperature=temperature,
                         options=options or PreprocessOptions(), shift=shift, gate=gate,
                         reliability=reliability)
