"""The one preprocessing path, shared by training and serving.

bytes -> decoded image (PNG or JPEG, EXIF orientation applied; DICOM through shared/ml/dicom/;
a large one at reduced size with ``reduce_large``, a side beyond ``MAX_SIDE`` always reduced
along it) -> grayscale float in [0, 255] (16-bit and float images scaled by their real range,
never clipped; DICOM by the range its header defines) -> optional border crop and histogram
equalization (``PreprocessOptions``) -> resized -> 3 channels ->
``keras.applications.vgg16.preprocess_input``.

The options are recorded with each model version (``as_dict`` and ``preprocessing_id``) so that
serving applies exactly what training saw. What decoding a file will cost is estimated beside
it, in shared/ml/decode_cost.py.
"""

from __future__ import annotations

import dataclasses
import io
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from skimage import exposure  # imported eagerly: a few ms (-X importtime), it loads lazily

from shared.config import DEFAULT_MAX_IMAGE_PIXELS
from shared.errors import ImageTooLarge, InvalidImage, UnsupportedImageFormat
from shared.ml.dicom import is_dicom, open_dicom

PREPROCESSING_ID = "gray3-bilinear-vgg16caffe-v1"
# MPO is a camera's multi-picture JPEG: Pillow reads its first picture, a plain JPEG.
ACCEPTED_FORMATS = frozenset({"PNG", "JPEG", "MPO"})
MAX_CROP_BORDER = 0.2
# With reduce_large, a large image is decoded and box-reduced by whole factors while its
# (cropped) shorter side stays at least this many times the model's input, so the resize that
# follows gives nearly what it gives from full size (Pillow's reducing_gap: 3 is "fair")...
REDUCE_GAP = 3
# ... and at least this many pixels where it is equalized: CLAHE's tiles and the histogram's
# counts depend on the resolution, and change visibly below it.
EQUALIZE_FLOOR = 1024
# Whatever the floor, a side longer than this is box-reduced along its axis before the image
# becomes float: twice the longest side of a real radiograph detector, so no radiograph is
# touched, while a 1 x 50 M pixel strip costs what an 8192 px one does (resizing it from full
# length builds filter tables of hundreds of MB).
MAX_SIDE = 8192
# Pillow's modes of more than 8 bits a sample: scaled by their real range, never clipped.
HIGH_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
# Colourfulness is measured on a thumbnail of at most this size.
COLOUR_THUMBNAIL = (128, 128)
# The ImageNet means VGG16's "caffe" scaling takes off, in BGR order, as Keras' has them.
VGG_BGR_MEAN = np.array([103.939, 116.779, 123.68], np.float32)

Equalization = Literal["none", "histogram", "clahe"]


@dataclass(frozen=True)
class PreprocessOptions:
    """Choices that reduce source shortcuts (burnt-in markers, text, exposure differences).

    ``crop_border`` is the fraction of the height and width removed from each side before
    resizing; ``equalize`` picks global histogram equalization or CLAHE, whose
    ``clahe_clip_limit`` is scikit-image's ``clip_limit`` (unused by the other modes).
    ``reduce_large`` decodes a large image at reduced size (``decode_floor``), which bounds
    the memory of decoding it; versions recorded without it were trained at full size.
    """

    equalize: Equalization = "none"
    crop_border: float = 0.0
    clahe_clip_limit: float = 0.01
    reduce_large: bool = False

    def __post_init__(self) -> None:
        if self.equalize not in get_args(Equalization):
            raise ValueError(f"equalize must be one of {get_args(Equalization)}, "
                             f"not {self.equalize!r}")
        crop = _as_float("crop_border", self.crop_border)
        if not 0.0 <= crop <= MAX_CROP_BORDER:
            raise ValueError(f"crop_border must be within 0..{MAX_CROP_BORDER}, not {crop}")
        clip = _as_float("clahe_clip_limit", self.clahe_clip_limit)
        if not 0.0 <= clip <= 1.0:  # scikit-image's range; 0 disables clipping (plain AHE)
            raise ValueError(f"clahe_clip_limit must be within 0..1, not {clip}")
        # JSON may hand back 0 for 0.0: store floats so equality and ids do not depend on it.
        object.__setattr__(self, "crop_border", crop)
        object.__setattr__(self, "clahe_clip_limit", clip)
        if not isinstance(self.reduce_large, bool):
            raise ValueError(f"reduce_large must be true or false, not {self.reduce_large!r}")

    def decode_floor(self, size: int) -> int:
        """The shorter side below which decoding an image for a ``size`` px model may not
        reduce it (0: decode at full size)."""
        if not self.reduce_large:
            return 0
        floor = max(REDUCE_GAP * size, EQUALIZE_FLOOR if self.equalize != "none" else 0)
        return math.ceil(floor / (1 - 2 * self.crop_border))

    def as_dict(self) -> dict[str, Any]:
        """The options as a JSON-ready dict (for the training params and the manifest)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessOptions:
        """Options from ``as_dict`` output; missing keys take defaults, unknown keys fail."""
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown preprocessing options: {sorted(unknown)}")
        return cls(**data)


def _as_float(name: str, value: object) -> float:
    # bool is an int subclass, and True as a crop fraction is a mistake, not 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {value!r}")
    return float(value)


def preprocessing_id(options: PreprocessOptions | None = None) -> str:
    """A stable name for the whole path: ``PREPROCESSING_ID`` for the default options.

    Only what changes the pixels is named, in the order it is applied, so two option sets
    share an id exactly when they produce the same images (e.g. a clip limit without CLAHE).
    """
    options = options or PreprocessOptions()
    parts = [PREPROCESSING_ID]
    if options.reduce_large:
        parts.append(f"reduce{REDUCE_GAP}")
    if options.crop_border:
        parts.append(f"crop{options.crop_border!r}")  # repr: shortest exact form of the float
    if options.equalize == "histogram":
        parts.append("histeq")
    elif options.equalize == "clahe":
        parts.append(f"clahe{options.clahe_clip_limit!r}")
    return "+".join(parts)


@dataclass(frozen=True)
class DecodedImage:
    """A decoded file: its gray pixels, and how colourful it was before becoming gray."""

    gray: np.ndarray  # float32 HxW in [0, 255]
    colourfulness: float = 0.0  # mean chroma on 0..255; 0 for grey files and DICOM


def decode_grayscale(data: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                     floor: int = 0) -> np.ndarray:
    """Decode an image file, PNG, JPEG or DICOM (told apart by content), to a float32 HxW
    array in [0, 255]."""
    return decode_image(data, max_pixels, floor).gray


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                 floor: int = 0, max_side: int = MAX_SIDE) -> DecodedImage:
    """Decode an image file as ``decode_grayscale`` does, keeping its colourfulness.

    With a ``floor`` (``PreprocessOptions.decode_floor``), an image whose shorter side is at
    least twice the floor is reduced by the largest whole factor that keeps it at or above
    the floor: a JPEG is decoded at 1/2, 1/4 or 1/8 scale where that suffices (DCT scaling),
    then any image is box-reduced before it becomes float. Whatever the floor, a side longer
    than ``max_side`` is reduced along its axis until it is no longer (``reduce_factors``).
    """
    if not data:
        raise InvalidImage("the file is empty")
    if is_dicom(data):
        dicom = open_dicom(data, max_pixels)
        return DecodedImage(dicom.display(reduce_factors(*dicom.shape, floor, max_side)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
            if image.format not in ACCEPTED_FORMATS:
                raise UnsupportedImageFormat(
                    f"{image.format} images are not accepted; send PNG, JPEG or DICOM"
                )
            if image.width * image.height > max_pixels:
                raise ImageTooLarge(
                    f"{image.width}x{image.height} pixels exceeds the limit of {max_pixels}"
                )
            if floor and image.format in ("JPEG", "MPO"):
                draft(image, floor)
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # a copy otherwise, even upright
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"the image has too many pixels: {exc}") from exc
    except UnidentifiedImageError as exc:  # its text names an in-memory buffer: no use
        raise InvalidImage("not a readable PNG, JPEG or DICOM image") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"the image is damaged or truncated: {exc}") from exc
    return _to_gray(image, floor, max_side)


def reduce_factors(height: int, width: int, floor: int = 0,
                   max_side: int = MAX_SIDE) -> tuple[int, int]:
    """The box reduction (along x, along y) an image of ``height`` x ``width`` gets before it
    becomes float: the largest whole factor that keeps the shorter side at or above
    ``floor`` (none without one), and along a side longer than ``max_side`` at least what
    brings it within."""
    factor = max(1, min(height, width) // floor) if floor else 1
    return max(factor, -(-width // max_side)), max(factor, -(-height // max_side))


def draft(image: Image.Image, floor: int) -> None:
    """Let libjpeg decode at the smallest DCT scale whose shorter side stays >= floor."""
    scale = floor / min(image.size)
    if scale <= 0.5:
        image.draft(image.mode, (math.ceil(image.width * scale),
                                 math.ceil(image.height * scale)))


def _to_gray(image: Image.Image, floor: int = 0, max_side: int = MAX_SIDE) -> DecodedImage:
    high_depth = image.mode in HIGH_DEPTH
    if not high_depth and image.mode not in ("L", "RGB"):
        # P, RGBA, LA, CMYK, 1 ...: through RGB, dropping alpha, as a viewer would show it.
        image = image.convert("RGB")
    factors = reduce_factors(image.height, image.width, floor, max_side)
    if factors != (1, 1):
        if image.mode.startswith("I;16"):
            image = image.convert("I")  # the same values, in a mode that can be reduced
        image = image.reduce(factors)
    if high_depth:
        return DecodedImage(_scale_to_8bit_range(np.asarray(image)))
    colour = 0.0
    if image.mode == "RGB":
        gray = image.convert("L")
        colour = _mean_chroma(_colour_thumbnail(image))
        image = gray
    return DecodedImage(np.asarray(image, dtype=np.float32), colour)


def colourfulness(image: Image.Image) -> float:
    """Mean chroma (max minus min channel) on 0..255, from a copy of at most 128 px a side."""
    return _mean_chroma(_colour_thumbnail(image))


def _colour_thumbnail(image: Image.Image) -> Image.Image:
    """An RGB image box-reduced by the smallest whole factor that brings it within
    COLOUR_THUMBNAIL: a box average, at a fraction of thumbnail()'s resampling cost."""
    factor = max(1, -(-max(image.size) // max(COLOUR_THUMBNAIL)))
    return image.reduce(factor) if factor > 1 else image


def _mean_chroma(small: Image.Image) -> float:
    # Planes, not the interleaved array reduced along its last axis: the same numbers for a
    # tenth of the time.
    r, g, b = (np.asarray(plane) for plane in small.split())
    return float((np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)).mean())


def _scale_to_8bit_range(pixels: np.ndarray, rows_per_strip: int = 256) -> np.ndarray:
    """Map high-bit-depth pixels linearly from their real min..max onto 0..255 (in float64,
    a strip of rows at a time: the float64 image would be twice the float32 result)."""
    lo, hi = float(pixels.min()), float(pixels.max())
    if hi <= lo:
        return np.zeros(pixels.shape, dtype=np.float32)
    out = np.empty(pixels.shape, dtype=np.float32)
    scale = 255.0 / (hi - lo)
    for top in range(0, pixels.shape[0], rows_per_strip):
        strip = np.asarray(pixels[top:top + rows_per_strip], dtype=np.float64)
        out[top:top + rows_per_strip] = (strip - lo) * scale
    return out


def resize_to_rgb(gray: np.ndarray, size: int) -> np.ndarray:
    """Resize a float gray image to ``size`` x ``size`` and repeat it into 3 channels."""
    # asarray: no copy of an image that is float32 already (a large one is hundreds of MB)
    resized = Image.fromarray(np.asarray(gray, dtype=np.float32), mode="F").resize(
        (size, size), Image.Resampling.BILINEAR
    )
    plane = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 255.0)
    return np.repeat(plane[:, :, None], 3, axis=2)


def prepare_gray(gray: np.ndarray, options: PreprocessOptions) -> np.ndarray:
    """Crop the border, then equalize, a float32 HxW image in [0, 255] (before resizing).

    Default options return ``gray`` itself; a crop alone returns a view of it.
    """
    gray = _crop_border(gray, options.crop_border)
    if options.equalize == "none":
        return gray
    unit = np.asarray(gray, dtype=np.float64) / 255.0
    if options.equalize == "histogram":
        equalized = exposure.equalize_hist(unit)  # type: ignore[no-untyped-call]
    else:
        equalized = exposure.equalize_adapthist(unit, clip_limit=options.clahe_clip_limit)
    return np.asarray(np.clip(equalized * 255.0, 0.0, 255.0), dtype=np.float32)


def _crop_border(gray: np.ndarray, fraction: float) -> np.ndarray:
    # Round half up, per axis: the same image size always loses the same rows and columns.
    # With fraction <= 0.2 at least one row and column always remain.
    top, left = (int(n * fraction + 0.5) for n in gray.shape[:2])
    if not top and not left:
        return gray
    height, width = gray.shape[:2]
    return gray[top:height - top, left:width - left]


def gray_to_pixels(gray: np.ndarray, size: int,
                   options: PreprocessOptions | None = None) -> np.ndarray:
    """The one path from a decoded gray image to what the model sees, in training, serving
    and Grad-CAM alike: prepared (``options``; None for a gray prepared already), resized
    and repeated into a float32 (size, size, 3) array in [0, 255], before model scaling."""
    if options is not None:
        gray = prepare_gray(gray, options)
    return resize_to_rgb(gray, size)


def load_pixels(data: bytes, size: int, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                options: PreprocessOptions | None = None) -> np.ndarray:
    """File bytes decoded (at reduced size where ``options`` say so), then
    ``gray_to_pixels``."""
    floor = options.decode_floor(size) if options else 0
    return gray_to_pixels(decode_grayscale(data, max_pixels, floor), size, options)


def to_model_input(pixels: Any) -> Any:
    """VGG16's own input scaling (RGB to BGR, each channel's ImageNet mean off) on an image or
    a batch.

    A tensor inside a ``tf.data`` pipeline (training) goes through
    ``keras.applications.vgg16.preprocess_input``; a NumPy array (serving) gets the same
    arithmetic in NumPy, into a new array, without importing Keras and TensorFlow (a process
    that serves an ONNX file needs neither).
    """
    if isinstance(pixels, np.ndarray):
        return np.ascontiguousarray(pixels[..., ::-1], dtype=np.float32) - VGG_BGR_MEAN
    from keras.applications import vgg16  # lazy: keeps TensorFlow out of light processes

    return vgg16.preprocess_input(pixels)

