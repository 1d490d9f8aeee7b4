"""How the chest-radiograph gate does: radiographs kept, other images refused.

Fits the gate (worker/evaluation/gate_fitting.py) on a seeded random 70% of
../shared/data/covid19-radiography at the given size (15% validation), then prints how many
of the remaining 15%, of each external set's radiographs and of the sample images that
scikit-image and scikit-learn ship (photographs, micrographs, documents, drawings; none
drawn here), and of the 200 LFW faces skimage ships, it refuses or lets through.

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
    loaded = {name: [load(p) for p in paths] for name, paths in parts.items()}
    for name, root in EXTERNAL.items():
        loaded[name] = [load(p) for p in sorted(root.rglob("*"))
                        if p.suffix.lower() in (".png", ".jpg", ".jpeg")]
    started = time.monotonic()
    gate = fit_gate([p for p, _ in loaded["train"]], [p for p, _ in loaded["validation"]],
                    args.seed)
    print(f"fitted in {time.monotonic() - started:.0f} s, threshold {gate.threshold:.2f}")
    for name, images in loaded.items():
        refused = sum(not gate.check(p, c).passed for p, c in images)
        print(f"{name:22s} refused {refused} of {len(images)} ({refused / len(images):.1%})")
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


if __name__ == "__main__":
    main()
