"""What decoding large images at reduced size (``PreprocessOptions.reduce_large``) costs and
saves: how far the model's input moves from the full-size decode, the decode time, and the
peak memory of decoding one very large image.

Real films from ../shared/data upscaled to each side (bicubic), saved as PNG and JPEG (q95).

    .venv/bin/python bench/reduced_decode.py [--films 8] [--sides 2400 4000]

Prints a table and writes bench/results/reduced_decode.json.
"""

from __future__ import annotations

import io
import json
import time

import common
import numpy as np
from common import RADIOGRAPHY
from PIL import Image


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--films", type=int, default=8)
    parser.add_argument("--sides", type=int, nargs="+", default=[2400, 4000])
    args = parser.parse_args()
    from shared.ml.preprocessing import PreprocessOptions, load_pixels
    from tests.helpers.env import sample_files
    from tests.helpers.memory import decode_peak_growth_mib

    films = sample_files(RADIOGRAPHY, args.films)["COVID"]
    cases = {"plain": {}, "crop0.05": {"crop_border": 0.05},
             "histogram": {"equalize": "histogram"}, "clahe": {"equalize": "clahe"}}
    rows = []
    for side in args.sides:
        for fmt in ("PNG", "JPEG"):
            files = []
            for path in films:
                with Image.open(path) as film:
                    big = film.convert("L").resize((side, side * 5 // 4),
                                                   Image.Resampling.BICUBIC)
                buffer = io.BytesIO()
                big.save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
                files.append(buffer.getvalue())
            for size in (64, 224):
                for name, choice in cases.items():
                    diffs, seconds = [], {False: 0.0, True: 0.0}
                    for data in files:
                        pixels = {}
                        for reduce in (False, True):
                            options = PreprocessOptions(reduce_large=reduce, **choice)
                            started = time.perf_counter()
                            pixels[reduce] = load_pixels(data, size, options=options)
                            seconds[reduce] += time.perf_counter() - started
                        diffs.append(np.abs(pixels[True] - pixels[False]))
                    every = np.concatenate([d.ravel() for d in diffs])
                    rows.append({"side": side, "format": fmt, "size": size, "options": name,
                                 "mean_abs_diff": round(float(every.mean()), 3),
                                 "p99_abs_diff": round(float(np.percentile(every, 99)), 2),
                                 "ms_full": round(1000 * seconds[False] / len(files), 1),
                                 "ms_reduced": round(1000 * seconds[True] / len(files), 1)})
                    print(json.dumps(rows[-1]))
    peaks = {f"{fmt}_{'reduced' if reduce else 'full'}": decode_peak_growth_mib(fmt, reduce)
             for fmt in ("PNG", "JPEG") for reduce in (False, True)}
    print("peak memory growth decoding one 7000x7000 image for 224 px, MiB:", json.dumps(peaks))
    common.save("reduced_decode", {"rows": rows, "peak_growth_mib_7000px": peaks}, indent=1)


if __name__ == "__main__":
    main()
