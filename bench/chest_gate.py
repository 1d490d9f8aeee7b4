"""How the chest-radiograph gate does: radiographs kept, other images refused.

Fits the gate (worker/evaluation/gate_fitting.py) on a seeded random 70% of
../shared/data/covid19-radiography at the given size (15% validation), then prints how many
radiographs it refuses per class of each part (train, validation, the remaining 15% test, and
every external set in ../shared/data), and how many of the sample images that scikit-image and
scikit-learn ship (photographs, micrographs, documents, drawings; none drawn here) and of the
200 LFW faces skimage ships it lets through. Writes bench/results/chest_gate_<size>px.json.

    .venv/bin/python bench/chest_gate.py --size 64
"""

from __future__ import annotations

import time
from pathlib import Path

import common
import numpy as np
from common import EXTERNAL, RADIOGRAPHY


def main() -> None:
    parser = common.parser(__doc__)
    common.add_size(parser, 64)
    common.add_seed(parser, 0)
    args = parser.parse_args()

    import skimage.data
    from PIL import Image
    from sklearn.datasets import load_sample_images

    from shared.ml.preprocessing import colourfulness, decode_image, resize_to_rgb
    from worker.evaluation.gate_fitting import fit_gate

    def load(path: Path) -> tuple[np.ndarray, float]:
        image = decode_image(path.read_bytes())
        return resize_to_rgb(image.gray, args.size)[..., 0], image.colourfulness

    films = sorted(RADIOGRAPHY.glob("*/images/*.png"))
    np.random.default_rng(args.seed).shuffle(films)  # type: ignore[arg-type]
    n = len(films)
    parts = {"train": films[:int(0.7 * n)], "validation": films[int(0.7 * n):int(0.85 * n)],
             "test": films[int(0.85 * n):]}
    paths: dict[str, list[Path]] = dict(parts)
    for name, root in EXTERNAL.items():
        paths[name] = [p for p in sorted(root.rglob("*"))
                       if p.suffix.lower() in (".png", ".jpg", ".jpeg")]
    loaded = {name: [load(p) for p in files] for name, files in paths.items()}
    started = time.monotonic()
    gate = fit_gate([p for p, _ in loaded["train"]], [p for p, _ in loaded["validation"]],
                    args.seed)
    print(f"fitted in {time.monotonic() - started:.0f} s, threshold {gate.threshold:.2f}")
    per_class: dict[str, dict[str, list[int]]] = {}
    for name, images in loaded.items():
        refused = sum(not gate.check(p, c).passed for p, c in images)
        print(f"{name:22s} refused {refused} of {len(images)} ({refused / len(images):.1%})")
        for (plane, colour), path in zip(images, paths[name], strict=True):
            counts = per_class.setdefault(name, {}).setdefault(class_of(path), [0, 0])
            counts[0] += not gate.check(plane, colour).passed
            counts[1] += 1
    for name, classes in per_class.items():
        print(f"  {name}: " + ", ".join(f"{label} {r}/{n} ({r / n:.1%})"
                                         for label, (r, n) in classes.items()))
    folder = Path(skimage.data.__file__).parent
    samples = {p.name: load(p) for p in sorted(folder.iterdir()) if p.suffix in (".png", ".jpg")}
    for i, array in enumerate(load_sample_images().images):
        picture = Image.fromarray(array)
        gray = np.asarray(picture.convert("L"), dtype=np.float32)
        samples[f"sklearn-{i}"] = (resize_to_rgb(gray, args.size)[..., 0],
                                   colourfulness(picture))
    passed = [name for name, (p, c) in samples.items() if gate.check(p, c).passed]
    print(f"sample images refused {len(samples) - len(passed)} of {len(samples)}; "
          f"let through: {passed}")
    faces = np.load(folder / "lfw_subset.npy")
    through = sum(gate.check(resize_to_rgb(face.astype(np.float32) * 255, args.size)[..., 0])
                  .passed for face in faces)
    print(f"LFW faces let through: {through} of {len(faces)}")
    common.save(f"chest_gate_{args.size}px", {
        "size": args.size, "seed": args.seed, "threshold": gate.threshold,
        "refused_per_class": per_class, "samples": len(samples), "samples_through": passed,
        "faces": len(faces), "faces_through": int(through)})


def class_of(path: Path) -> str:
    """The class folder: <Class>/images/x.png or <Class>/x.png."""
    return path.parent.parent.name if path.parent.name == "images" else path.parent.name


if __name__ == "__main__":
    main()
