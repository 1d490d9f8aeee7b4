"""A published version, from the registry into memory: every file it reads checked against
its manifest's sha256, its runtime chosen and warmed up, its answers checked to have the
manifest's classes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shared.config import InferenceRuntime, Precision
from shared.errors import ModelLoadFailed
from shared.manifest import Manifest
from shared.ml.chest_gate import ChestGate
from shared.ml.modeling import load_model
from shared.ml.preprocessing import PreprocessOptions, preprocessing_id
from shared.ml.runtimes import NOT_CHECKED, Timings
from shared.ml.served import ServedVersion, serve_model
from shared.ml.shift import ShiftReference
from shared.registry import Registry
from shared.registry.files import GATE_FILE, INT8_FILE, ONNX_FILE, SHIFT_FILE


def load_version(registry: Registry, version: str, runtime: InferenceRuntime = "tensorflow",
                 warm_batch_sizes: Sequence[int] = (1,), threads: int | None = None,
                 timings: Timings | None = None, precision: Precision = "auto"
                 ) -> ServedVersion:
    """A published version, after verifying the checksum of every file it reads."""
    try:
        manifest = registry.manifest(version)
        options = PreprocessOptions.from_dict(manifest.preprocessing_options or {})
        if (manifest.preprocessing or preprocessing_id(options)) != preprocessing_id(options):
            raise ModelLoadFailed(f"version {version} was trained with preprocessing "
                                  f"{manifest.preprocessing!r}, which this service lacks")
        shift_file = registry.verified_file(version, SHIFT_FILE)
        gate_file = registry.verified_file(version, GATE_FILE)
        int8_file = (registry.verified_file(version, INT8_FILE)
                     if runtime != "tensorflow" and precision != "float32" else None)
        served = serve_model(
            version, list(manifest.classes), manifest.image_size,
            load_model(registry.verified_model_path(version)),
            temperature=manifest.temperature, options=options,
            shift=ShiftReference.load(shift_file) if shift_file is not None else None,
            gate=ChestGate.load(gate_file) if gate_file is not None else None,
            reliability=manifest.effective_reliability,
            onnx_file=registry.verified_file(version, ONNX_FILE)
            if runtime != "tensorflow" else None,
            int8_file=int8_file, runtime=runtime, warm_batch_sizes=warm_batch_sizes,
            threads=threads, timings=timings, precision=precision,
            openvino_refusal=openvino_refusal(manifest))
        size = served.image_size
        n_out = served.infer(np.zeros((1, size, size, 3), np.float32)).probabilities.shape[-1]
    except ModelLoadFailed:
        raise
    except Exception as exc:  # a bad artifact can fail in many ways; all mean "not served"
        raise ModelLoadFailed(f"version {version} could not be loaded: {exc}") from exc
    if n_out != len(served.classes):
        raise ModelLoadFailed(f"version {version} outputs {n_out} classes, manifest lists "
                              f"{len(served.classes)}")
    return served


def openvino_refusal(manifest: Manifest) -> str | None:
    """Why OpenVINO may not serve a version's INT8 copy, from its check at publication; None
    where that check passed."""
    check = manifest.int8.openvino if manifest.int8 is not None else None
    if check is None:
        return NOT_CHECKED
    if not check.passed:
        return f"its OpenVINO check did not pass: {check.error or 'no reason recorded'}"
    return None
