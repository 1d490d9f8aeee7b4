"""The ways real chest films differ from a training set's, made from its own radiographs.

A gate fitted on one archive's films learns that archive's framing and exposure: films of
another hospital, portable AP films of the sickest patients, films stored rotated, with a
black border or a burnt-in annotation fall outside it and are refused. Each variation here is
a change of acquisition or storage, never of anatomy: zoom and framing, rotation, collimation
borders, exposure and contrast, detector noise, markers and text, support lines and tubes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from shared.ml.chest_gate import GATE_SIZE

Variation = Callable[[np.ndarray, np.random.Generator], np.ndarray]
S = GATE_SIZE


def _image(plane: np.ndarray) -> Image.Image:
    return Image.fromarray(np.asarray(plane, dtype=np.float32), mode="F")


def _array(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def zoomed_in(plane: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Tighter framing: the lungs fill the film (portable AP films, cropped exports)."""
    side = S * rng.uniform(0.6, 0.9)
    x, y = rng.uniform(0, S - side, 2)
    box = (float(x), float(y), float(x + side), float(y + side))
    return _array(_image(plane).resize((S, S), Image.Resampling.BILINEAR, box=box))


def bordered(plane: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smaller film on a flat field: collimation, a scanned film, a padded export."""
    side = int(S * rng.uniform(0.55, 0.9))
    height = min(S, int(side * rng.uniform(0.8, 1.2)))
    small = _image(plane).resize((side, height), Image.Resampling.BOX)
    field = Image.new("F", (S, S), float(rng.choice([0.0, 255.0, rng.uniform(0, 255)])))
    x = int(rng.integers(0, S - small.width + 1))
    y = int(rng.integers(0, S - small.height + 1))
    field.paste(small, (x, y))
    return _array(field)


def rotated(plane: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A tilted patient or a film stored sideways."""
    angle = float(rng.choice([90.0, -90.0])) if rng.random() < 0.15 else rng.uniform(-25, 25)
    fill = float(rng.choice([0.0, float(np.median(plane))]))
    return _array(_image(plane).rotate(angle, Image.Resampling.BILINEAR, fillcolor=fill))


def exposed(plane: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another exposure and display window: gamma, contrast and level."""
    unit = np.clip(plane / 255.0, 0, 1) ** rng.uniform(0.5, 2.0)
    low, high = np.quantile(unit, [rng.uniform(0, 0.1), rng.uniform(0.9, 1.0)])
    unit = np.clip((unit - low) / max(float(high - low), 1e-3), 0, 1)
    scale, offset = rng.uniform(0.5, 1.0), rng.uniform(0, 0.5)
    return np.asarray(np.clip((unit * scale + offset * (1 - scale)) * 255, 0, 255))


def noisy(plane: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A lower dose or a portable detector: more quantum noise."""
    return np.clip(plane + rng.normal(0, rng.uniform(2, 12), plane.shape), 0, 255)


def annotated(plane: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Burnt-in markers and text, ECG leads and tubes."""
    image = _image(plane)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 4))):
        x, y = rng.uniform(0, S * 0.8, 2)
        w, h = rng.uniform(2, S * 0.25), rng.uniform(2, S * 0.08)
        draw.rectangle([x, y, x + w, y + h], fill=float(rng.choice([0.0, 255.0])))
    for _ in range(int(rng.integers(0, 4))):
        points = [tuple(rng.uniform(0, S, 2)) for _ in range(3)]
        draw.line([(float(a), float(b)) for a, b in points], fill=float(rng.uniform(180, 255)),
                  width=int(rng.integers(1, 3)))
    return _array(image)


VARIATIONS: tuple[Variation, ...] = (zoomed_in, bordered, rotated, exposed, noisy, annotated)


def varied(planes: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """One variant of each radiograph (at the gate's size), each made by one to three of the
    variations in random order."""
    out = []
    for plane in planes:
        image = _array(_image(plane).resize((S, S), Image.Resampling.BOX))
        for index in rng.permutation(len(VARIATIONS))[:int(rng.integers(1, 4))]:
            image = VARIATIONS[int(index)](image, rng)
        out.append(np.clip(image, 0, 255))
    return out
