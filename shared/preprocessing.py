"""The one preprocessing path, shared by training and serving.

bytes -> decoded image (PNG or JPEG, EXIF orientation applied) -> grayscale float in [0, 255]
(16-bit and float images scaled by their real range, never clipped) -> resized -> 3 channels
-> ``keras.applications.vgg16.preprocess_input``.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from shared.errors import ImageTooLarge, InvalidImage, UnsupportedImageFormat

PREPROCESSING_ID = "gray3-bilinear-vgg16caffe-v1"
ACCEPTED_FORMATS = frozenset({"PNG", "JPEG"})
DEFAULT_MAX_PIXELS = 50_000_000


def decode_grayscale(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file to a float32 HxW array in [0, 255]."""
    if not data:
        raise InvalidImage("the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
            if image.format not in ACCEPTED_FORMATS:
                raise UnsupportedImageFormat(
                    f"{image.format} images are not accepted; send PNG or JPEG"
                )
            if image.width * image.height > max_pixels:
                raise ImageTooLarge(
                    f"{image.width}x{image.height} pixels exceeds the limit of {max_pixels}"
                )
            image.load()
            image = ImageOps.exif_transpose(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"the image has too many pixels: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise InvalidImage(f"not a readable PNG or JPEG image: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"the image is damaged or truncated: {exc}") from exc
    return _to_gray(image)


def _to_gray(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _scale_to_8bit_range(np.asarray(image, dtype=np.float64))
    if image.mode not in ("L", "RGB"):
        # P, RGBA, LA, CMYK, 1 ...: through RGB, dropping alpha, as a viewer would show it.
        image = image.convert("RGB")
    if image.mode == "RGB":
        image = image.convert("L")
    return np.asarray(image, dtype=np.float32)


def _scale_to_8bit_range(pixels: np.ndarray) -> np.ndarray:
    """Map high-bit-depth pixels linearly from their real min..max onto 0..255."""
    lo, hi = float(pixels.min()), float(pixels.max())
    if hi <= lo:
        return np.zeros(pixels.shape, dtype=np.float32)
    return ((pixels - lo) * (255.0 / (hi - lo))).astype(np.float32)


def resize_to_rgb(gray: np.ndarray, size: int) -> np.ndarray:
    """Resize a float gray image to ``size`` x ``size`` and repeat it into 3 channels."""
    resized = Image.fromarray(gray.astype(np.float32), mode="F").resize(
        (size, size), Image.Resampling.BILINEAR
    )
    plane = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 255.0)
    return np.repeat(plane[:, :, None], 3, axis=2)


def load_pixels(data: bytes, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode and resize: a float32 (size, size, 3) array in [0, 255], before model scaling."""
    return resize_to_rgb(decode_grayscale(data, max_pixels), size)


def to_model_input(pixels: Any) -> Any:
    """VGG16's own input scaling (BGR mean subtraction) on an image or a batch.

    Takes a NumPy array (serving) or a tensor inside a ``tf.data`` pipeline (training); both
    go through ``keras.applications.vgg16.preprocess_input``.
    """
    from keras.applications import vgg16  # lazy: keeps TensorFlow out of light processes

    if isinstance(pixels, np.ndarray):
        # preprocess_input edits float32 arrays in place: work on a copy.
        return np.asarray(vgg16.preprocess_input(np.array(pixels, dtype=np.float32, copy=True)))
    return vgg16.preprocess_input(pixels)


def preprocess(data: bytes, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The whole path from file bytes to one model input of shape (size, size, 3)."""
    return to_model_input(load_pixels(data, size, max_pixels))
