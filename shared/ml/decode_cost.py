"""What decoding and preparing a file will hold at its peak, from its true header, without
decoding it: what the API's decode budget counts for each image (api/inference/decode_budget.py).
"""

from __future__ import annotations

import io
import math

from PIL import Image

from shared.config import DEFAULT_MAX_IMAGE_PIXELS
from shared.ml.dicom import is_dicom, stored_cost, tile_shape
from shared.ml.preprocessing import (
    ACCEPTED_FORMATS,
    HIGH_DEPTH,
    MAX_SIDE,
    Equalization,
    draft,
    reduce_factors,
)

# Bytes per pixel that equalizing holds besides the image (its float64 copies), measured.
EQUALIZE_BYTES = {"histogram": 36, "clahe": 54}
# Bytes per pixel of Pillow's images, by mode (RGB and the like take four).
PILLOW_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
# What any decode holds besides the images counted: decoders' buffers, the 224 px results;
# and a margin for what the count misses (allocators' rounding, decoders' tables).
WORKSPACE = 4 * 2**20
MARGIN = 1.08
# Bytes per pixel of a DICOM's display tiles: a few float64 copies each.
TILE_BYTES = 32


def decode_cost(data: bytes, floor: int = 0, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, *,
                equalize: Equalization = "none", max_side: int = MAX_SIDE) -> int:
    """The peak bytes that ``decode_image(data, max_pixels, floor)`` and preparing its result
    (``gray_to_pixels``, ``equalize`` as the options say) hold beyond ``data`` itself,
    estimated from the file's true header without decoding it: its frame's own size, its
    bit depth, and each copy on the way (decoded pixels, converted and reduced images,
    the float image at the size it becomes float, the resize's copy). 0 for a file that
    decoding refuses from its header (unreadable, too large, a frame unlike its header):
    decoding it holds next to nothing before it says what is wrong. Calibrated on measured
    peaks of PNG, JPEG and DICOM files up to 50 M pixels: 1.1 to 1.9 times them."""
    try:
        if is_dicom(data):
            stored = stored_cost(data, max_pixels)
            factors = reduce_factors(*stored.shape, floor, max_side)
            shape = _reduced(stored.shape, factors)
            tile = math.prod(tile_shape(stored.shape, factors))
            decoding = max(stored.peak,
                           stored.held + 4 * shape[0] * shape[1] + TILE_BYTES * tile)
        else:
            decoding, shape = _image_cost(data, floor, max_pixels, max_side)
    except Exception:  # any damage or refusal at all: decoding reports it with its code
        return 0
    if not decoding:  # refused before decoding
        return 0
    return math.ceil(MARGIN * max(decoding, _prepare_cost(shape, equalize))) + WORKSPACE


def _reduced(shape: tuple[int, int], factors: tuple[int, int]) -> tuple[int, int]:
    return -(-shape[0] // factors[1]), -(-shape[1] // factors[0])


def _image_cost(data: bytes, floor: int, max_pixels: int,
                max_side: int) -> tuple[int, tuple[int, int]]:
    """What decoding a PNG or JPEG holds at most, and the shape it becomes float at."""
    with Image.open(io.BytesIO(data)) as image:
        if image.format not in ACCEPTED_FORMATS or image.width * image.height > max_pixels:
            return 0, (0, 0)
        full = image.width * image.height
        progressive = bool(image.info.get("progressive") or image.info.get("progression"))
        if floor and image.format in ("JPEG", "MPO"):
            draft(image, floor)  # only sets the DCT scale: nothing is decoded
        width, height, mode = image.width, image.height, image.mode
        transposed = _may_transpose(image, data)
    pixels = width * height
    decoded = pixels * PILLOW_BYTES.get(mode, 4) + 8 * height  # and a row pointer per row
    # the decoder's rows (previous and current), or a progressive JPEG's coefficients
    decoding = 2 * full * len(mode) if progressive else 2 * width * PILLOW_BYTES.get(mode, 4)
    high_depth = mode in HIGH_DEPTH
    converted = 4 * pixels + 8 * height if not high_depth and mode not in ("L", "RGB") else 0
    factors = reduce_factors(height, width, floor, max_side)
    shape = _reduced((height, width), factors)
    reduced = shape[0] * shape[1]
    if high_depth:  # an integer copy, the float32 result, float64 strips
        as_float = reduced * (PILLOW_BYTES.get(mode, 4) + 4) + 2 * 8 * 256 * shape[1]
    else:  # an 8-bit gray copy (of RGB) and its bytes, the float32 result
        as_float = reduced * (1 + 1 + 4)
    if factors != (1, 1):
        widened = 4 * pixels + 8 * height if mode.startswith("I;16") else 0
        as_float += widened + reduced * (1 if mode == "L" else 4) + 8 * shape[0]
    return decoded + max(decoding, decoded if transposed else 0, converted + as_float), shape


def _may_transpose(image: Image.Image, data: bytes) -> bool:
    """Whether EXIF may turn the image (a copy): a JPEG's orientation is in its header; a
    PNG's EXIF may follow its pixels, so any sign of one counts."""
    if image.format == "PNG":
        return b"eXIf" in data or b"Raw profile type exif" in data
    return image.getexif().get(0x0112, 1) not in (1, None)


def _prepare_cost(shape: tuple[int, int], equalize: Equalization) -> int:
    """The float image with the resize's float copy of it and its first pass; before that,
    with equalization, the image beside equalization's float64 copies."""
    pixels = shape[0] * shape[1]
    resizing = 4 * pixels + 4 * pixels + 4 * 224 * shape[0]
    if equalize == "none":
        return resizing
    equalized = 4 * pixels  # beside the image the caller holds
    return max(4 * pixels + EQUALIZE_BYTES[equalize] * pixels, equalized + resizing)
