"""What a heat map costs: ``/predict?explain=true``'s work (Grad-CAM pass and PNG overlays)
against a plain batch-1 forward pass of the same version, at the served size.

    .venv/bin/python bench/explain_latency.py [--size 224] [--repeats 10]

Random weights (timing does not depend on them); a real X-ray from ../shared/data as input.
Prints the medians and writes JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "covid19-radiography" / "COVID" / "images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    from shared.ml.explain import explain
    from shared.ml.modeling import ModelConfig, build_model
    from shared.ml.preprocessing import decode_grayscale
    from shared.ml.served import serve_model

    model = build_model(ModelConfig(num_classes=3, image_size=args.size))
    loaded = serve_model("bench", ["COVID", "Normal", "Viral Pneumonia"], args.size, model)
    gray = decode_grayscale(sorted(DATA.iterdir())[0].read_bytes(), 10**8)
    pixels = loaded.pixels(gray)[None]
    loaded.infer(pixels), explain(loaded, gray)  # trace, build and warm both paths

    timings: dict[str, list[float]] = {"forward (batch 1, tf.function)": [],
                                       "explain (Grad-CAM + overlays)": []}
    for _ in range(args.repeats):  # interleaved, so drift in the machine hits both alike
        for name, call in zip(timings, (lambda: loaded.infer(pixels),
                                        lambda: explain(loaded, gray)), strict=True):
            started = time.perf_counter()
            call()
            timings[name].append(1000 * (time.perf_counter() - started))
    medians = {name: statistics.median(values) for name, values in timings.items()}
    forward, explained = medians.values()
    print(f"{args.size} px, median of {args.repeats}:")
    for name, value in medians.items():
        print(f"  {name}: {value:.0f} ms")
    print(f"  ratio: {explained / forward:.2f}x")
    results = REPO / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"explain_{args.size}px.json").write_text(json.dumps(
        {"size": args.size, "repeats": args.repeats, "median_ms": medians,
         "all_ms": {k: list(np.round(v, 1)) for k, v in timings.items()}}, indent=2))


if __name__ == "__main__":
    main()
