"""Choose the near-duplicate threshold of worker/data/dedup.py on the real radiographs.

Hashes the 3,738 images of ../shared/data/covid19-radiography plus planted copies of --copies
of them (JPEG quality 75; 80 % resize and back; each border cropped by 3-5 % and resized
back), then for thresholds 0..16 and four hash configurations reports: close pairs, merged
groups and the images in them, the largest group, groups mixing classes (a proxy for false
merges: the same film under two diagnoses is rare) and the fraction of each kind of copy
grouped with its original. Prints Markdown tables and writes bench/results/dedup_threshold.json.
Usage: .venv/bin/python bench/dedup_threshold.py [--copies 200] [--seed 0]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import common
import numpy as np
from common import RADIOGRAPHY
from PIL import Image

from worker.data.dedup import (
    DEFAULT_KINDS,
    DEFAULT_MAX_DISTANCE,
    DEFAULT_ZOOMS,
    distance_blocks,
    hash_images,
    summarize_groups,
)
from worker.data.splits import connected_groups

THRESHOLDS = range(17)
COPY_KINDS = ("jpeg", "resize", "crop")
# name -> (indices into DEFAULT_KINDS, indices into DEFAULT_ZOOMS)
CONFIGS = {
    "phash": ([0], [0]),
    "phash+dhash": ([0, 1], [0]),
    "phash+crops": ([0], list(range(len(DEFAULT_ZOOMS)))),
    "phash+dhash+crops": ([0, 1], list(range(len(DEFAULT_ZOOMS)))),
}
DEFAULT_CONFIG = "phash+dhash+crops"


def plant_copies(originals: list[Path], folder: Path, seed: int) -> list[tuple[Path, str]]:
    """Write a JPEG, a resized and a cropped copy of each original; return (path, kind)."""
    rng = np.random.default_rng(seed)
    copies = []
    for index, path in enumerate(originals):
        with Image.open(path) as opened:
            image = opened.convert("L")
        w, h = image.size
        jpeg = folder / f"{index}-jpeg.jpg"
        image.save(jpeg, "JPEG", quality=75)
        small = image.resize((round(w * 0.8), round(h * 0.8)), Image.Resampling.BILINEAR)
        resized = folder / f"{index}-resize.png"
        small.resize((w, h), Image.Resampling.BILINEAR).save(resized)
        left, top, right, bottom = rng.uniform(0.03, 0.05, 4)
        box = (round(w * left), round(h * top), w - round(w * right), h - round(h * bottom))
        cropped = folder / f"{index}-crop.png"
        image.crop(box).resize((w, h), Image.Resampling.BILINEAR).save(cropped)
        copies += [(jpeg, "jpeg"), (resized, "resize"), (cropped, "crop")]
    return copies


def close_pairs_up_to(bits: np.ndarray, n_real: int, limit: int) -> dict[str, np.ndarray]:
    """Pairs (i < j) within ``limit`` bits with their distance, and each real image's NN."""
    firsts, seconds, dists, nearest = [], [], [], []
    for start, block in distance_blocks(bits):
        rows, cols = np.nonzero(block <= limit)
        keep = cols > rows + start
        firsts.append(rows[keep] + start)
        seconds.append(cols[keep])
        dists.append(block[rows[keep], cols[keep]])
        real = block[: max(0, n_real - start), :n_real].astype(np.int32)
        real[np.arange(len(real)), np.arange(len(real)) + start] = 1 << 20
        nearest.append(real.min(axis=1))
    return {"i": np.concatenate(firsts), "j": np.concatenate(seconds),
            "d": np.concatenate(dists), "nearest": np.concatenate(nearest)}


def mixed_groups(groups: np.ndarray, labels: np.ndarray) -> int:
    """Groups holding images of more than one class."""
    pairs = np.unique(np.stack([groups, labels]), axis=1)
    return int((np.bincount(pairs[0]) > 1).sum())


def sweep(pairs: dict[str, np.ndarray], labels: np.ndarray, n_real: int,
          copies: list[tuple[int, str]]) -> list[dict[str, Any]]:
    """Grouping figures at each threshold, for the real images and with the copies."""
    rows = []
    both_real = pairs["j"] < n_real
    for t in THRESHOLDS:
        close = pairs["d"] <= t
        real_close = close & both_real
        real_groups = connected_groups(n_real, pairs["i"][real_close], pairs["j"][real_close])
        summary = summarize_groups(real_groups)
        all_groups = connected_groups(len(labels), pairs["i"][close], pairs["j"][close])
        row: dict[str, Any] = {
            "threshold": t, "pairs": int(real_close.sum()),
            "merged_groups": summary.merged_groups, "images_merged": summary.images_merged,
            "largest": summary.largest,
            "mixed_class_groups": mixed_groups(real_groups, labels[:n_real]),
        }
        for kind in COPY_KINDS:
            hits = [all_groups[n_real + k] == all_groups[orig]
                    for k, (orig_kind, orig) in enumerate(copies) if orig_kind == kind]
            row[f"recall_{kind}"] = float(np.mean(hits))
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of sweep rows."""
    header = "| t | pairs | merged groups | images | largest | mixed-class | " \
             "JPEG | resize | crop |\n|---|---|---|---|---|---|---|---|---|"
    lines = [header]
    for r in rows:
        lines.append(f"| {r['threshold']} | {r['pairs']} | {r['merged_groups']} | "
                     f"{r['images_merged']} | {r['largest']} | {r['mixed_class_groups']} | "
                     f"{r['recall_jpeg']:.1%} | {r['recall_resize']:.1%} | "
                     f"{r['recall_crop']:.1%} |")
    return "\n".join(lines)


def load_real() -> tuple[list[Path], np.ndarray, list[str]]:
    """Every image of the radiography copy and its integer class."""
    classes = sorted(d.name for d in RADIOGRAPHY.iterdir() if (d / "images").is_dir())
    paths, labels = [], []
    for label, name in enumerate(classes):
        found = sorted((RADIOGRAPHY / name / "images").glob("*.png"))
        paths += found
        labels += [label] * len(found)
    return paths, np.array(labels), classes


def hash_all(real: list[Path], copies: list[Path]) -> tuple[np.ndarray, dict[str, float]]:
    """Hash bits of the real images then the copies, with timings."""
    started = time.perf_counter()
    real_bits = hash_images(real)
    real_s = time.perf_counter() - started
    copy_bits = hash_images(copies)
    timing = {"hash_real_s": real_s, "hash_ms_per_image": 1000 * real_s / len(real),
              "hash_copies_s": time.perf_counter() - started - real_s}
    return np.concatenate([real_bits, copy_bits]), timing


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--copies", type=int, default=200)
    common.add_seed(parser, 0)
    args = parser.parse_args()
    real, labels, classes = load_real()
    rng = np.random.default_rng(args.seed)
    originals = sorted(rng.choice(len(real), args.copies, replace=False).tolist())
    with tempfile.TemporaryDirectory(prefix="cxr-dedup-") as folder:
        planted = plant_copies([real[i] for i in originals], Path(folder), args.seed)
        bits, timing = hash_all(real, [path for path, _ in planted])
    copies = [(kind, originals[k // len(COPY_KINDS)]) for k, (_, kind) in enumerate(planted)]
    all_labels = np.concatenate([labels, [labels[orig] for _, orig in copies]])
    report: dict[str, Any] = {"images": len(real), "classes": classes, "copies": len(planted),
                              "kinds": DEFAULT_KINDS, "zooms": DEFAULT_ZOOMS, **timing,
                              "default_config": DEFAULT_CONFIG,
                              "default_threshold": DEFAULT_MAX_DISTANCE, "configs": {}}
    print(f"{len(real)} images + {len(planted)} copies; hashing "
          f"{timing['hash_ms_per_image']:.1f} ms/image ({timing['hash_real_s']:.1f} s)\n")
    for name, (kinds, zooms) in CONFIGS.items():
        started = time.perf_counter()
        pairs = close_pairs_up_to(bits[:, kinds][:, :, zooms], len(real), max(THRESHOLDS))
        pairs_s = time.perf_counter() - started
        rows = sweep(pairs, all_labels, len(real), copies)
        nearest = np.bincount(np.minimum(pairs["nearest"], max(THRESHOLDS) + 1))
        report["configs"][name] = {"pairwise_s": pairs_s, "rows": rows,
                                   "nearest_neighbour_histogram": nearest.tolist(),
                                   "nearest_neighbour_median": float(np.median(pairs["nearest"]))}
        print(f"### {name} (pairwise {pairs_s:.1f} s; nearest-neighbour distance among real "
              f"images: median {np.median(pairs['nearest']):.0f}, histogram 0..16,>16 = "
              f"{nearest.tolist()})\n\n{markdown(rows)}\n")
    common.save("dedup_threshold", report)


if __name__ == "__main__":
    main()
