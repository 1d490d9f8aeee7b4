"""A published version loaded for inference: checksum-verified, warmed up, thread-safe.

One forward pass gives the class probabilities (temperature-calibrated) and, when the version
has a shift reference, the penultimate features that score how far the image lies from the
training distribution. The pass runs in one of two runtimes: TensorFlow (the Keras model as
one ``tf.function`` graph) or ONNX Runtime (the version's ``model.onnx``, exported and checked
by the worker). ``"auto"`` times both on the version itself while warming up and keeps the
faster, so the choice is measured on the machine that serves, not guessed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from shared.calibration import apply_temperature
from shared.chest_gate import GATE_FILE, ChestGate
from shared.errors import ModelLoadFailed, NotAChestXray
from shared.modeling import load_model
from shared.preprocessing import (
    DecodedImage,
    PreprocessOptions,
    prepare_gray,
    preprocessing_id,
    resize_to_rgb,
    to_model_input,
)
from shared.registry import Registry
from shared.reliability import ReliabilityRecord, reasons
from shared.schemas import ChestXrayCheck, DistributionShift, Prediction
from shared.shift import (
    SHIFT_FILE,
    STATS_LAYOUT,
    ShiftReference,
    feature_model,
    input_features,
)

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
Runtime = Literal["auto", "tensorflow", "onnx"]


def compiled_forward(model: Any, size: int, with_features: bool, xla: bool = False,
                     layout: str = STATS_LAYOUT) -> Any:
    """The forward pass as one graph (a ``tf.function`` with a fixed input signature), traced
    once for every batch size: Keras' eager call and ``model.predict`` pay per-layer dispatch
    on every request (bench/serve_benchmark.py measures the three). ``xla`` compiles it with
    XLA, once per batch size; the benchmark measures whether that pays on the machine."""
    import tensorflow as tf

    net = feature_model(model, layout) if with_features else model

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)],
                 jit_compile=xla)
    def forward(batch: Any) -> Any:
        return net(batch, training=False)

    return forward


class OnnxForward:
    """The exported two-headed graph in ONNX Runtime (CPU): (features, softmax) or softmax."""

    def __init__(self, path: Path, with_features: bool, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # No arena: it keeps each session's peak (hundreds of MB at batch 16, 224 px) for as
        # long as the process lives, and a hot reload would stack them (serve_benchmark.py).
        options.enable_cpu_mem_arena = False
        # ONNX Runtime's default: pool threads spin briefly between a pass's parallel regions
        # instead of sleeping. Measured on 2 shared cores with a decoding thread beside it,
        # batch-1 passes took 107-128 ms spinning against 139-198 ms sleeping.
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.with_features = with_features

    def __call__(self, batch: np.ndarray) -> Any:
        features, probabilities = self.session.run(
            None, {self.input: np.ascontiguousarray(batch, dtype=np.float32)})
        return (features, probabilities) if self.with_features else probabilities


@dataclass
class Inference:
    """Calibrated probabilities of a batch and, where the version has one, shift scores."""

    probabilities: np.ndarray
    shift_scores: np.ndarray | None


@dataclass
class LoadedModel:
    version: str
    classes: list[str]
    image_size: int
    model: Any
    # Fitted on the validation split at training time; 1.0 leaves the softmax as it is.
    temperature: float = 1.0
    options: PreprocessOptions = field(default_factory=PreprocessOptions)
    shift: ShiftReference | None = None
    gate: ChestGate | None = None
    reliability: ReliabilityRecord | None = None
    # One inference at a time per model: two concurrent VGG16 passes only fight for cores.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # The forward pass in use and its runtime; TensorFlow until choose_runtime() says else.
    forward: Callable[[np.ndarray], Any] | None = field(default=None, repr=False)
    runtime: str = "tensorflow"
    # The largest batch worth gathering for this version in its runtime (choose_runtime).
    batch_size: int = 1
    # Grad-CAM's network, built on the first explained request (shared.explain).
    cam: Any = field(default=None, repr=False)

    def pixels(self, gray: np.ndarray) -> np.ndarray:
        """A decoded gray image prepared exactly as this version was trained."""
        return resize_to_rgb(prepare_gray(gray, self.options), self.image_size)

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
            if self.forward is None:
                raise RuntimeError("no forward pass: load versions with load_version()")
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
                          if self.reliability else None)


def _from_manifest(registry: Registry, version: str) -> LoadedModel:
    manifest = registry.manifest(version)
    options = PreprocessOptions.from_dict(manifest.get("preprocessing_options", {}))
    if manifest.get("preprocessing", preprocessing_id(options)) != preprocessing_id(options):
        raise ModelLoadFailed(f"version {version} was trained with preprocessing "
                              f"{manifest['preprocessing']!r}, which this service lacks")
    shift_file = registry.verified_file(version, SHIFT_FILE)
    gate_file = registry.verified_file(version, GATE_FILE)
    reliability = manifest.get("reliability")
    return LoadedModel(
        version=version, classes=list(manifest["classes"]),
        image_size=int(manifest["image_size"]),
        model=load_model(registry.verified_model_path(version)),
        temperature=float((manifest.get("calibration") or {}).get("temperature", 1.0)),
        options=options,
        shift=ShiftReference.load(shift_file) if shift_file is not None else None,
        gate=ChestGate.load(gate_file) if gate_file is not None else None,
        reliability=ReliabilityRecord.model_validate(reliability) if reliability else None,
    )


def with_check(prediction: Prediction, check: ChestXrayCheck | None) -> Prediction:
    """An answer with the gate's verdict; one that did not pass is not a finding."""
    if check is None:
        return prediction
    why = prediction.reasons if check.passed else ["not_a_chest_xray", *prediction.reasons]
    return prediction.model_copy(update={"chest_xray": check, "reasons": why,
                                         "reliable": not why})


def _seconds_per_image(candidates: dict[str, Callable[[np.ndarray], Any]], size: int,
                       batch_sizes: Sequence[int]) -> dict[str, dict[int, float]]:
    """Seconds per image of each forward pass at each batch size: the best of a few passes
    (the first at a shape allocates, and on a shared machine noise only ever adds time). The
    runtimes take turns pass by pass, so a slow spell of the machine hits all of them."""
    profiles: dict[str, dict[int, float]] = {name: {} for name in candidates}
    for n in sorted(set(batch_sizes)):
        batch = to_model_input(np.full((n, size, size, 3), 128, np.float32))
        times: dict[str, list[float]] = {name: [] for name in candidates}
        for _ in range(max(2, 8 // n)):
            for name, forward in candidates.items():
                started = time.perf_counter()
                forward(batch)
                times[name].append(time.perf_counter() - started)
        for name in candidates:
            profiles[name][n] = min(times[name]) / n
    return profiles


def preferred_batch(profile: dict[int, float], tolerance: float = 0.05) -> int:
    """The smallest batch size whose time per image is within ``tolerance`` of the best: a
    larger batch would make its requests wait longer for no throughput."""
    best = min(profile.values())
    return min(n for n, seconds in profile.items() if seconds <= best * (1 + tolerance))


# What choose_runtime measured, by graph: (runtime, batch size). Timing depends on the graph
# (architecture, input size, heads, runtimes available), not on the weights, so a server
# that hot-reloads a retrained version of the same graph reuses it instead of timing again
# while it serves: a swap under load then takes seconds, not the better part of a minute.
Timings = dict[tuple[Any, ...], tuple[str, int]]


def choose_runtime(loaded: LoadedModel, onnx_file: Path | None, preference: Runtime,
                   threads: int | None = None, batch_sizes: Sequence[int] = (1,),
                   timings: Timings | None = None) -> None:
    """Set the version's forward pass and its preferred batch size, both measured here.

    Every runtime the version can use (its ONNX export; TensorFlow) is timed at every batch
    size it will be served at, which also warms each one up. 'auto' keeps the runtime with
    the least seconds per image alone (a quiet server's latency) plus per image at its best
    batch size (a busy server's throughput); 'onnx' falls back to TensorFlow, with a warning,
    for a version that has no export. On a 2-core CPU ONNX Runtime is fastest at batch 1 and
    TensorFlow at batch 8 or so (bench/serve_benchmark.py), so the batch size the batcher
    gathers is the chosen runtime's own, not a fixed one. With ``timings``, a graph timed
    before is only warmed up, at the batch sizes it will be sent.
    """
    with_features = loaded.shift is not None
    names: list[str] = []
    if preference in ("auto", "onnx") and onnx_file is not None:
        names.append("onnx")
    if preference != "onnx" or not names:
        if preference == "onnx":
            log.warning("version %s has no ONNX export: serving it with TensorFlow",
                        loaded.version)
        names.append("tensorflow")

    def make(name: str) -> Callable[[np.ndarray], Any]:
        if name == "onnx":
            assert onnx_file is not None
            return OnnxForward(onnx_file, with_features, threads)
        layout = loaded.shift.layout if loaded.shift is not None else STATS_LAYOUT
        return compiled_forward(loaded.model, loaded.image_size, with_features, layout=layout)

    size = loaded.image_size
    graph = (size, with_features, tuple(names), tuple(sorted(set(batch_sizes))),
             len(loaded.model.layers), loaded.model.count_params())
    if timings is not None and graph in timings:
        name, batch = timings[graph]
        forward = make(name)
        for n in sorted(set(batch_sizes)):
            if n <= batch:
                forward(to_model_input(np.full((n, size, size, 3), 128, np.float32)))
        loaded.runtime, loaded.forward, loaded.batch_size = name, forward, batch
        log.info("version %s: serving with %s at batches of up to %d, as timed for the same "
                 "graph before", loaded.version, name, batch)
        return
    candidates = {name: make(name) for name in names}
    profiles = _seconds_per_image(candidates, size, batch_sizes)
    smallest = min(batch_sizes)
    name = min(profiles, key=lambda n: profiles[n][smallest] + min(profiles[n].values()))
    loaded.runtime, loaded.forward = name, candidates[name]
    loaded.batch_size = preferred_batch(profiles[name])
    if timings is not None:
        timings[graph] = (name, loaded.batch_size)
    log.info("version %s: serving with %s at batches of up to %d; ms per image by batch "
             "size: %s", loaded.version, name, loaded.batch_size,
             {rt: {n: round(1000 * s, 1) for n, s in p.items()} for rt, p in profiles.items()})


def warm_batch_sizes(max_size: int) -> list[int]:
    """The batch sizes a server warms a version up for: powers of two, and the largest."""
    return sorted({min(2**i, max_size) for i in range(max_size.bit_length() + 1)})


def configure_tensorflow_threads(intra_op: int | None, inter_op: int | None) -> None:
    """Thread pools of TensorFlow in this process; before its first operation."""
    if intra_op is None and inter_op is None:
        return
    import tensorflow as tf

    try:
        if intra_op is not None:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        if inter_op is not None:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError:
        log.warning("TensorFlow already started: inference thread settings not applied")


def load_version(registry: Registry, version: str, runtime: Runtime = "tensorflow",
                 warm_batch_sizes: Sequence[int] = (1,), threads: int | None = None,
                 timings: Timings | None = None) -> LoadedModel:
    """Load a version after verifying its checksums, then choose its runtime and batch size
    by timing every batch size it will be asked for, which also warms each one up, so no
    request pays for a first call."""
    try:
        loaded = _from_manifest(registry, version)
        onnx_file = registry.verified_file(version, ONNX_FILE) if runtime != "tensorflow" else None
        choose_runtime(loaded, onnx_file, runtime, threads, warm_batch_sizes, timings)
        size = loaded.image_size
        n_out = loaded.infer(np.zeros((1, size, size, 3), np.float32)).probabilities.shape[-1]
    except ModelLoadFailed:
        raise
    except Exception as exc:  # a bad artifact can fail in many ways; all mean "not served"
        raise ModelLoadFailed(f"version {version} could not be loaded: {exc}") from exc
    if n_out != len(loaded.classes):
        raise ModelLoadFailed(f"version {version} outputs {n_out} classes, manifest lists "
                              f"{len(loaded.classes)}")
    return loaded
