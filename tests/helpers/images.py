"""Real X-rays drawn at random, and re-encoded, resized and re-cropped copies of them."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

COPY_KINDS = ("jpeg", "resize", "crop")


def random_real_images(root: Path, count: int, seed: int) -> list[Path]:
    """``count`` distinct real images drawn at random across the classes."""
    every = sorted(root.glob("*/images/*.png"))
    picked = np.random.default_rng(seed).choice(len(every), count, replace=False)
    return [every[i] for i in sorted(picked)]


def plant_copies(originals: list[Path], folder: Path, seed: int) -> list[tuple[Path, str, int]]:
    """JPEG q75, 80 % resized and 3-5 %-per-border cropped copies: (path, kind, original)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for index, path in enumerate(originals):
        with Image.open(path) as opened:
            image = opened.convert("L")
        w, h = image.size
        image.save(folder / f"{index}-jpeg.jpg", "JPEG", quality=75)
        image.resize((round(w * 0.8), round(h * 0.8)), Image.Resampling.BILINEAR).resize(
            (w, h), Image.Resampling.BILINEAR).save(folder / f"{index}-resize.png")
        left, top, right, bottom = rng.uniform(0.03, 0.05, 4)
        box = (round(w * left), round(h * top), w - round(w * right), h - round(h * bottom))
        image.crop(box).resize((w, h), Image.Resampling.BILINEAR).save(
            folder / f"{index}-crop.png")
        copies += [(folder / f"{index}-jpeg.jpg", "jpeg", index),
                   (folder / f"{index}-resize.png", "resize", index),
                   (folder / f"{index}-crop.png", "crop", index)]
    return copies


def png_declaring(width: int, height: int, idat: bytes) -> bytes:
    """A grey PNG whose header declares ``width`` x ``height``, with valid chunk CRCs around
    whatever ``idat`` holds (garbage, or too little for what it declares)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))
