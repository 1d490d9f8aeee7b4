"""What a heat map costs: ``/predict?explain=true``'s work (Grad-CAM pass and PNG overlays)
against a plain batch-1 forward pass of the same version, at the served size.

    .venv/bin/python bench/explain_latency.py [--size 224] [--repeats 10]

Random weights (timing does not depend on them); a real X-ray from ../shared/data as input.
Prints the medians and writes JSON under bench/results/.
"""

from __future__ import annotations

import statistics
import time

import common
import numpy as np
from common import CLASSES, RADIOGRAPHY


def main() -> None:
    parser = common.parser(__doc__)
    common.add_size(parser, 224)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    from shared.ml.explain import explain
    from shared.ml.modeling import ModelConfig, build_model
    from shared.ml.preprocessing import decode_grayscale
    from shared.ml.served import serve_model

    model = build_model(ModelConfig(num_classes=3, image_size=args.size))
    loaded = serve_model("bench", list(CLASSES), args.size, model)
    gray = decode_grayscale(sorted((RADIOGRAPHY / "COVID" / "images").iterdir())[0].read_bytes(),
                            10**8)
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
    common.save(f"explain_{args.size}px", {
        "size": args.size, "repeats": args.repeats, "median_ms": medians,
        "all_ms": {k: list(np.round(v, 1)) for k, v in timings.items()}})


if __name__ == "__main__":
    main()
