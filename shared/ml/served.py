"""A published version as it serves: checksum-verified, warmed up, immutable, thread-safe.

One forward pass gives the class probabilities (temperature-calibrated) and, when the version
has a shift reference, the features that score how far the image lies from the training
distribution. The one path from image files to answers is here: ``submit_images`` decodes and
screens each image as the version was trained and hands it to a ``Passes`` (the API's batcher,
or the version's own passes in the calling thread: ``answer_images``); ``score`` passes
prepared pixels in batches. ``serve_model`` builds a version from a model in memory (a trained
model before it is published); ``shared.loading.load_version`` from the registry.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from shared.config import GateMode, InferenceRuntime, Precision
from shared.errors import CxrError, NotAChestXray
from shared.ml.calibration import apply_temperature
from shared.ml.chest_gate import ChestGate, gate_features
from shared.ml.preprocessing import (
    DecodedImage,
    PreprocessOptions,
    decode_image,
    gray_to_pixels,
    prepare_gray,
    to_model_input,
)
from shared.ml.reliability import ReliabilityRecord, reasons
from shared.ml.runtimes import (
    NOT_CHECKED,
    Forward,
    Timings,
    choose_runtime,
    runtime_and_precision,
)
from shared.ml.screening import (
    Hold,
    ImageLimits,
    ImageSource,
    Screened,
    checked,
    failed,
    no_hold,
    outcome,
    read_image,
)
from shared.ml.shift import ShiftReference, input_features
from shared.schemas import DistributionShift, Prediction

# Images per pass where nobody gathers batches (the command line, evaluations, promotion):
# bounds the pixels held at once.
SCORE_BATCH = 32


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

    def screen(self, image: DecodedImage, mode: GateMode) -> Screened:
        """The image prepared as this version was trained, with the chest-radiograph gate's
        verdict; with mode 'refuse', an image that fails is refused (NotAChestXray) before
        any diagnosis."""
        prepared = prepare_gray(image.gray, self.options)  # kept: heat maps are drawn on it
        pixels = gray_to_pixels(prepared, self.image_size)
        gated = mode != "off" and self.gate is not None
        inputs = (gate_features(pixels[..., 0])
                  if gated or (self.shift is not None and self.shift.needs_inputs) else None)
        if not gated or self.gate is None:
            return Screened(prepared, pixels, inputs=inputs)
        check = self.gate.check(pixels[..., 0], image.colourfulness, inputs)
        if not check.passed and mode == "refuse":
            raise NotAChestXray(f"this does not look like a chest radiograph ({check.reason}); "
                                "no diagnosis is given")
        return Screened(prepared, pixels, check, inputs)

    def screen_file(self, data: bytes, limits: ImageLimits) -> Screened:
        """An image file decoded, prepared and screened as this version was trained."""
        return self.screen(self.decode(data, limits.max_pixels), limits.gate)

    def submit_images(self, images: Iterable[ImageSource], limits: ImageLimits,
                      passes: Passes, hold: Hold = no_hold) -> list[Future[Prediction]]:
        """Each image screened and handed to ``passes``, one after another in this thread
        (``hold`` held for each meanwhile): one future per image, in order, holding its
        answer with the gate's verdict, or the error that image alone gets (a CxrError)."""
        futures = []
        for source in images:
            try:
                futures.append(self._submit(read_image(source), limits, passes, hold))
            except CxrError as exc:
                futures.append(failed(exc))
        passes.flush()
        return futures

    def _submit(self, data: bytes, limits: ImageLimits, passes: Passes,
                hold: Hold) -> Future[Prediction]:
        # A function of its own: the screened image (a full-size one can be hundreds of MB)
        # is freed when it returns, not kept while the next image decodes.
        with hold(data):
            screened = self.screen_file(data, limits)
            return checked(passes.submit(self, screened), screened.check)

    def answer_images(self, images: Iterable[ImageSource],
                      limits: ImageLimits) -> list[Prediction | CxrError]:
        """Each image's answer or its own error, in order, from passes of up to
        SCORE_BATCH images in this thread."""
        return [outcome(f) for f in self.submit_images(images, limits, OwnPasses())]

    def infer(self, pixels: np.ndarray, inputs: np.ndarray | None = None) -> Inference:
        """One pass over a batch of (n, size, size, 3) pixels in [0, 255]; ``inputs``: their
        gate features, where the screening computed them."""
        batch = to_model_input(pixels)
        with self.lock:
            outputs = self.forward(batch)
        if self.shift is None:
            return self.calibrated(np.asarray(outputs), None, pixels)
        features, raw = (np.asarray(t) for t in outputs)
        return self.calibrated(raw, features, pixels, inputs)

    def score(self, pixels: np.ndarray, batch_size: int = SCORE_BATCH) -> Inference:
        """``infer`` over any number of prepared images, in passes of ``batch_size``."""
        if not len(pixels):
            return Inference(np.zeros((0, len(self.classes)), np.float32),
                             None if self.shift is None else np.zeros(0))
        passes = [self.infer(pixels[i:i + batch_size])
                  for i in range(0, len(pixels), batch_size)]
        scores = [p.shift_scores for p in passes]
        return Inference(np.concatenate([p.probabilities for p in passes]),
                         None if any(s is None for s in scores)
                         else np.concatenate([s for s in scores if s is not None]))

    def calibrated(self, raw: np.ndarray, features: np.ndarray | None,
                   pixels: np.ndarray, inputs: np.ndarray | None = None) -> Inference:
        """A pass's softmax outputs temperature-scaled, and its features (with its input
        ``pixels``' gate features, where the reference reads them too: ``inputs``, else
        computed here) shift-scored."""
        probabilities = (apply_temperature(raw, self.temperature)
                         if self.temperature != 1.0 else raw)
        if self.shift is None or features is None:
            return Inference(probabilities, None)
        if not self.shift.needs_inputs:
            inputs = None
        elif inputs is None:
            inputs = input_features(pixels)
        return Inference(probabilities, self.shift.scores(features, inputs))

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        return self.score(pixels).probabilities

    def predict(self, gray: np.ndarray) -> Prediction:
        """The answer for one decoded image: label, calibrated probabilities, shift."""
        return self.predict_batch(self.pixels(gray)[None])[0]

    def predict_batch(self, pixels: np.ndarray,
                      inputs: np.ndarray | None = None) -> list[Prediction]:
        """The answers for a batch of prepared pixels, one forward pass for all (``inputs``:
        their gate features, where known)."""
        result = self.infer(pixels, inputs)
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


class Passes(Protocol):
    """Where screened images get their answers: the version's own passes in the calling
    thread (``OwnPasses``), the API's batcher shared by concurrent requests, or Grad-CAM."""

    def submit(self, model: ServedVersion, screened: Screened) -> Future[Prediction]:
        """Queue one image; it must not keep ``screened`` beyond what it needs."""
        ...

    def flush(self) -> None:
        """Answer whatever is queued, now."""
        ...


class OwnPasses:
    """Passes of up to ``batch_size`` images, run in the thread that submits them."""

    def __init__(self, batch_size: int = SCORE_BATCH) -> None:
        self.batch_size = batch_size
        # Only the pixels and gate features wait: a prepared full-size image can be megabytes.
        self._queued: list[tuple[ServedVersion, np.ndarray, np.ndarray | None,
                                 Future[Prediction]]] = []

    def submit(self, model: ServedVersion, screened: Screened) -> Future[Prediction]:
        future: Future[Prediction] = Future()
        self._queued.append((model, screened.pixels, screened.inputs, future))
        if len(self._queued) >= self.batch_size:
            self.flush()
        return future

    def flush(self) -> None:
        queued, self._queued = self._queued, []
        if not queued:
            return
        try:
            answers = queued[0][0].predict_batch(np.stack([q[1] for q in queued]),
                                                 stacked_inputs([q[2] for q in queued]))
        except Exception as exc:  # the pass failed: each image of it fails with it
            for *_, future in queued:
                future.set_exception(exc)
            return
        for (*_, future), answer in zip(queued, answers, strict=True):
            future.set_result(answer)


def stacked_inputs(inputs: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """The gate features of a batch's images, where every image has them."""
    if not inputs or any(i is None for i in inputs):
        return None
    return np.stack([i for i in inputs if i is not None])


def serve_model(version: str, classes: list[str], image_size: int, model: Any, *,
                temperature: float = 1.0, options: PreprocessOptions | None = None,
                shift: ShiftReference | None = None, gate: ChestGate | None = None,
                reliability: ReliabilityRecord | None = None, onnx_file: Path | None = None,
                runtime: InferenceRuntime = "tensorflow", warm_batch_sizes: Sequence[int] = (1,),
                threads: int | None = None, timings: Timings | None = None,
                int8_file: Path | None = None, precision: Precision = "auto",
                openvino_refusal: str | None = NOT_CHECKED) -> ServedVersion:
    """A model ready to answer: its runtime and batch size chosen by timing every batch size
    it will be asked for, which also warms each one up, so no request pays for a first call.
    OpenVINO may serve ``int8_file`` only where ``openvino_refusal`` is None (its check at
    publication passed)."""
    choice = choose_runtime(model, image_size, shift.layout if shift else None, onnx_file,
                            runtime, threads, warm_batch_sizes, timings, name=version,
                            int8_file=int8_file, precision=precision,
                            openvino_refusal=openvino_refusal)
    served_runtime, served_precision = runtime_and_precision(choice.runtime)
    return ServedVersion(version=version, classes=classes, image_size=image_size, model=model,
                         forward=choice.forward, runtime=served_runtime,
                         precision=served_precision,
                         batch_size=choice.batch_size, temperature=temperature,
                         options=options or PreprocessOptions(), shift=shift, gate=gate,
                         reliability=reliability)
