"""The forward pass of a version in the runtime that serves it fastest on this machine.

Four forward passes: TensorFlow (the Keras model as one ``tf.function`` graph), ONNX Runtime
on the version's ``model.onnx`` (exported and checked by the worker), and ONNX Runtime and
OpenVINO on its INT8 copy ``model.int8.onnx`` (kept only where its check passed; OpenVINO only
where its own run of that check passed too). ``"auto"`` times each the version has on the
version itself while warming up and keeps the fastest, so the choice is measured on the
machine that serves, not guessed.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from shared.config import InferenceRuntime, Precision
from shared.ml.preprocessing import to_model_input
from shared.ml.shift import STATS_LAYOUT, feature_model

log = logging.getLogger(__name__)

Forward = Callable[[np.ndarray], Any]
INT8 = "onnx-int8"  # the candidate name of the INT8 copy in ONNX Runtime
OPENVINO = "openvino"  # the INT8 copy in OpenVINO
# Why OpenVINO may not serve a version that says nothing of it (an older manifest).
NOT_CHECKED = "its INT8 copy has no OpenVINO check"


def runtime_and_precision(candidate: str) -> tuple[str, str]:
    """What a candidate forward pass is called where clients read it."""
    if candidate in (INT8, OPENVINO):
        return ("onnx" if candidate == INT8 else OPENVINO), "int8"
    return candidate, "float32"


def compiled_forward(model: Any, size: int, with_features: bool, xla: bool = False,
                     layout: str = STATS_LAYOUT) -> Forward:
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

    return cast(Forward, forward)


class OnnxForward:
    """The exported two-headed graph in ONNX Runtime (CPU): (features, softmax) or softmax."""

    def __init__(self, path: Path, with_features: bool, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # No arena: it keeps each session's peak (hundreds of MB at batch 16, 224 px) for as
        # long as the process lives, and a hot reload would stack them (serve_benchmark.py).
        options.enable_cpu_mem_arena = False
        if threads:
            options.intra_op_num_threads = threads
        # Pool threads sleep between a pass's parallel regions instead of spinning: spinning
        # took the cores from decoding and the batch's own scoring beside the passes.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.with_features = with_features

    def __call__(self, batch: np.ndarray) -> Any:
        features, probabilities = self.session.run(
            None, {self.input: np.ascontiguousarray(batch, dtype=np.float32)})
        return (features, probabilities) if self.with_features else probabilities


class OpenVinoForward:
    """The INT8 copy in OpenVINO (CPU), read from its ONNX file: (features, softmax) or softmax.

    One model with a dynamic batch, compiled once: it answers any batch the batcher sends, and
    was as fast as a model compiled per batch size (which holds one copy per size)."""

    def __init__(self, path: Path, with_features: bool, threads: int | None = None) -> None:
        import openvino as ov

        # f32 for what stays float (the head): the plugin's default is bf16 on CPUs that have
        # it, which would serve other arithmetic than the check measured on another machine.
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY",
                                  "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.with_features = with_features

    def __call__(self, batch: np.ndarray) -> Any:
        # Inputs shared, not copied; outputs copied: the request's own buffers are reused by
        # the next pass, and a pass's outputs are read after the version's lock is released.
        outputs = self.request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)},
                                     share_inputs=True, share_outputs=False)
        features, probabilities = outputs[0], outputs[1]
        return (features, probabilities) if self.with_features else probabilities


@functools.cache
def openvino_version() -> str | None:
    """OpenVINO's version where it imports here; None where it does not."""
    try:
        import openvino as ov
    except ImportError:
        return None
    return str(ov.__version__)


def runtime_forward(candidate: str, path: Path, with_features: bool,
                    threads: int | None = None) -> Forward:
    """The forward pass of an ONNX file in the runtime a candidate names: ``"onnx"`` (the float
    export) and ``INT8`` (the INT8 copy) in ONNX Runtime, ``OPENVINO`` (the INT8 copy) in
    OpenVINO. It takes a batch in the model's input scaling and gives (features,
    probabilities) with ``with_features``, else probabilities."""
    if candidate in ("onnx", INT8):
        return OnnxForward(path, with_features, threads)
    if candidate == OPENVINO:
        return OpenVinoForward(path, with_features, threads)
    raise ValueError(f"no runtime for an ONNX file is called {candidate!r}")


def seconds_per_image(candidates: dict[str, Callable[[np.ndarray], Any]], size: int,
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


@dataclass(frozen=True)
class RuntimeChoice:
    """The forward pass chosen for a version, its runtime and the largest batch worth
    gathering for it (the smallest within 5% of the best time per image), and the seconds per
    image of each runtime by batch size it was chosen on (empty when timed before)."""

    runtime: str
    forward: Forward
    batch_size: int
    profiles: dict[str, dict[int, float]]


def pick_runtime(profiles: dict[str, dict[int, float]]) -> tuple[str, int]:
    """'auto''s rule on measured profiles: the runtime with the least seconds per image
    alone (a quiet server's latency) plus per image at its best batch size (a busy server's
    throughput), and that runtime's preferred batch size."""
    smallest = min(min(profile) for profile in profiles.values())
    runtime = min(profiles, key=lambda n: profiles[n][smallest] + min(profiles[n].values()))
    return runtime, preferred_batch(profiles[runtime])


def candidate_names(preference: InferenceRuntime, precision: Precision, onnx_file: Path | None,
                    int8_file: Path | None, name: str = "",
                    openvino_refusal: str | None = NOT_CHECKED) -> list[str]:
    """The forward passes a version may be served with, under the settings' preferences.
    ``openvino_refusal`` says why OpenVINO may not serve the version's INT8 copy (its check at
    publication did not pass, or it had none); None where it passed."""
    int8_allowed = precision != "float32" and int8_file is not None
    if int8_allowed and openvino_refusal is None and openvino_version() is None:
        openvino_refusal = "openvino does not import here"
    openvino = int8_allowed and openvino_refusal is None
    if preference == OPENVINO:
        if openvino:
            return [OPENVINO]
        if precision == "float32":
            log.warning("version %s: CXR_INFERENCE_PRECISION=float32, so not OpenVINO (which "
                        "serves the INT8 copy): serving it in float", name)
        elif int8_file is not None:
            log.warning("version %s: OpenVINO may not serve it (%s): serving its INT8 copy "
                        "with ONNX Runtime", name, openvino_refusal)
            return [INT8]
        else:
            log.warning("version %s has no INT8 copy for OpenVINO: serving it in float", name)
        return candidate_names("onnx", "float32", onnx_file, None, name)
    if int8_allowed and preference == "auto" and not openvino:
        log.info("version %s: OpenVINO is not a candidate: %s", name, openvino_refusal)
    with_openvino = [OPENVINO] if openvino and preference == "auto" else []
    if precision == "int8":
        if int8_file is not None:
            return [INT8, *with_openvino]
        log.warning("version %s has no INT8 copy: serving it in float", name)
    names: list[str] = []
    if preference in ("auto", "onnx") and onnx_file is not None:
        names.append("onnx")
    if preference != "onnx" or not names:
        if preference == "onnx":
            log.warning("version %s has no ONNX export: serving it with TensorFlow", name)
        names.append("tensorflow")
    if precision == "auto" and preference != "tensorflow" and int8_file is not None:
        names += [INT8, *with_openvino]
    return names


def choose_runtime(model: Any, size: int, layout: str | None, onnx_file: Path | None,
                   preference: InferenceRuntime, threads: int | None = None,
                   batch_sizes: Sequence[int] = (1,), timings: Timings | None = None,
                   name: str = "", int8_file: Path | None = None,
                   precision: Precision = "auto",
                   openvino_refusal: str | None = NOT_CHECKED) -> RuntimeChoice:
    """The forward pass of ``model`` (with shift features when ``layout`` is given) and its
    preferred batch size, both measured here.

    Every runtime the version can use (its ONNX export and INT8 copy, the copy in OpenVINO where
    ``openvino_refusal`` is None; TensorFlow) is timed at every batch size it will be served at,
    which also warms each one up. 'auto' keeps the one ``pick_runtime`` picks; 'onnx' falls
    back to TensorFlow, with a warning, for a version that has no export, and 'openvino' to
    the INT8 copy in ONNX Runtime (or float) where OpenVINO may not serve it. Runtimes are
    fastest per image at different batch sizes, so the batch the batcher gathers is the chosen
    runtime's own, measured, not a fixed one. With ``timings``, a graph timed before is only
    warmed up, at the batch sizes it will be sent.
    """
    with_features = layout is not None
    names = candidate_names(preference, precision, onnx_file, int8_file, name, openvino_refusal)

    def make(runtime: str) -> Forward:
        if runtime == "tensorflow":
            return compiled_forward(model, size, with_features, layout=layout or STATS_LAYOUT)
        path = onnx_file if runtime == "onnx" else int8_file
        assert path is not None
        return runtime_forward(runtime, path, with_features, threads)

    graph = (size, with_features, tuple(names), tuple(sorted(set(batch_sizes))),
             len(model.layers), model.count_params())
    if timings is not None and graph in timings:
        runtime, batch = timings[graph]
        forward = make(runtime)
        for n in sorted(set(batch_sizes)):
            if n <= batch:
                forward(to_model_input(np.full((n, size, size, 3), 128, np.float32)))
        log.info("version %s: serving with %s at batches of up to %d, as timed for the same "
                 "graph before", name, runtime, batch)
        return RuntimeChoice(runtime, forward, batch, {})
    candidates = {runtime: make(runtime) for runtime in names}
    profiles = seconds_per_image(candidates, size, batch_sizes)
    runtime, batch = pick_runtime(profiles)
    if timings is not None:
        timings[graph] = (runtime, batch)
    log.info("version %s: serving with %s at batches of up to %d; ms per image by batch "
             "size: %s", name, runtime, batch,
             {rt: {n: round(1000 * s, 1) for n, s in p.items()} for rt, p in profiles.items()})
    return RuntimeChoice(runtime, candidates[runtime], batch, profiles)


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
