"""The one preprocessing path: decoding every pixel mode, EXIF, scaling and hostile input."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.errors import CxrError, ImageTooLarge, InvalidImage, UnsupportedImageFormat
from shared.ml.preprocessing import (
    colourfulness,
    decode_grayscale,
    decode_image,
    load_pixels,
    resize_to_rgb,
    to_model_input,
)
from tests.helpers.env import sample_files

VGG16_BGR_MEANS = np.array([103.939, 116.779, 123.68], dtype=np.float32)
ORIENTATION = 0x0112


def _encode(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _rgb_pattern(width: int = 40, height: int = 24) -> np.ndarray:
    """A colourful, non-symmetric uint8 RGB image."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack(
        [(x * 255 // (width - 1)), (y * 255 // (height - 1)), ((x + 2 * y) * 7) % 256], axis=2
    ).astype(np.uint8)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma, the conversion a viewer (and Pillow) uses for RGB -> L."""
    rgb = rgb.astype(np.float64)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


# -- pixel modes ---------------------------------------------------------------------------
def test_grayscale_l_png_is_returned_unchanged_as_float32() -> None:
    pixels = np.arange(24 * 40, dtype=np.uint32).reshape(24, 40).astype(np.uint8)
    gray = decode_grayscale(_encode(Image.fromarray(pixels)))
    assert gray.dtype == np.float32
    assert gray.shape == (24, 40)  # height x width
    np.testing.assert_array_equal(gray, pixels.astype(np.float32))


def test_rgb_png_becomes_its_luma() -> None:
    rgb = _rgb_pattern()
    gray = decode_grayscale(_encode(Image.fromarray(rgb)))
    assert gray.shape == rgb.shape[:2]
    np.testing.assert_allclose(gray, _luma(rgb), atol=1.0)
    pure = np.zeros((2, 3, 3), np.uint8)
    pure[0, 0] = (255, 0, 0)
    pure[0, 1] = (0, 255, 0)
    pure[0, 2] = (0, 0, 255)
    pure[1, :] = (200, 200, 200)
    decoded = decode_grayscale(_encode(Image.fromarray(pure)))
    np.testing.assert_allclose(decoded[0], [76.2, 149.7, 29.1], atol=1.0)
    np.testing.assert_array_equal(decoded[1], [200, 200, 200])


def test_rgba_ignores_alpha_and_gives_the_same_gray_as_rgb() -> None:
    rgb = _rgb_pattern()
    alpha = np.random.default_rng(0).integers(0, 256, rgb.shape[:2], dtype=np.uint8)
    rgba = np.dstack([rgb, alpha])
    from_rgba = decode_grayscale(_encode(Image.fromarray(rgba, "RGBA")))
    from_rgb = decode_grayscale(_encode(Image.fromarray(rgb)))
    np.testing.assert_array_equal(from_rgba, from_rgb)
    # Fully transparent pixels still show their colour, not black or white.
    clear = np.dstack([rgb, np.zeros(rgb.shape[:2], np.uint8)])
    np.testing.assert_array_equal(decode_grayscale(_encode(Image.fromarray(clear, "RGBA"))),
                                  from_rgb)


def test_palette_image_uses_palette_colours_not_indices() -> None:
    indices = np.tile(np.arange(4, dtype=np.uint8), (6, 3))  # 6 x 12
    image = Image.fromarray(indices, "L").convert("P")
    image.putpalette([250, 250, 250, 170, 170, 170, 90, 90, 90, 10, 10, 10] + [0] * 756)
    assert image.mode == "P"
    data = _encode(image)
    assert Image.open(io.BytesIO(data)).mode == "P"
    gray = decode_grayscale(data)
    expected = np.array([250, 170, 90, 10], np.float32)[indices]
    np.testing.assert_array_equal(gray, expected)


def test_coloured_palette_matches_the_rgb_image_it_shows() -> None:
    rgb = _rgb_pattern()
    image = Image.fromarray(rgb).quantize(colors=16)
    assert image.mode == "P"
    shown = np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(decode_grayscale(_encode(image)),
                                  decode_grayscale(_encode(Image.fromarray(shown))))


def test_la_image_takes_the_luminance_and_ignores_alpha() -> None:
    lum = np.arange(24 * 40).reshape(24, 40).astype(np.uint8)
    alpha = np.full_like(lum, 7)
    image = Image.merge("LA", (Image.fromarray(lum), Image.fromarray(alpha)))
    data = _encode(image)
    assert Image.open(io.BytesIO(data)).mode == "LA"
    np.testing.assert_array_equal(decode_grayscale(data), lum.astype(np.float32))


def _png16(values: np.ndarray) -> bytes:
    image = Image.fromarray(values.astype(np.uint16))
    data = _encode(image)
    assert Image.open(io.BytesIO(data)).mode.startswith("I")  # really 16-bit on disk
    return data


def test_16_bit_png_is_scaled_by_its_real_range_not_clipped() -> None:
    ramp = np.round(np.linspace(0, 4095, 64)).astype(np.uint16)
    values = np.tile(ramp, (8, 1))
    gray = decode_grayscale(_png16(values))
    assert gray.dtype == np.float32
    assert gray.min() == 0.0
    assert gray.max() == pytest.approx(255.0)
    # Clipping at 255 would flatten most of the ramp; scaling keeps every step distinct.
    assert np.count_nonzero(gray >= 254.999) == 8
    assert np.all(np.diff(gray[0]) > 0)
    np.testing.assert_allclose(gray, values * (255.0 / 4095.0), rtol=1e-5, atol=1e-4)


def test_16_bit_png_with_an_offset_range_is_stretched_linearly() -> None:
    rng = np.random.default_rng(1)
    values = rng.integers(1000, 3001, (16, 16)).astype(np.uint16)
    values[0, 0], values[0, 1] = 1000, 3000
    gray = decode_grayscale(_png16(values))
    assert gray.min() == 0.0
    assert gray.max() == pytest.approx(255.0)
    np.testing.assert_allclose(gray, (values - 1000.0) * (255.0 / 2000.0), atol=1e-3)
    # Order is preserved pixel by pixel.
    order = np.argsort(values, axis=None, kind="stable")
    assert np.all(np.diff(gray.ravel()[order]) >= 0)


def test_constant_16_bit_png_is_black_not_nan() -> None:
    gray = decode_grayscale(_png16(np.full((8, 8), 1234)))
    assert np.isfinite(gray).all()
    np.testing.assert_array_equal(gray, np.zeros((8, 8), np.float32))


def test_16_bit_scaling_in_strips_is_the_whole_image_scaling() -> None:
    values = np.random.default_rng(2).integers(700, 40_000, (700, 33)).astype(np.uint16)
    gray = decode_grayscale(_png16(values))  # 700 rows: three strips
    whole = values.astype(np.float64)
    lo, hi = whole.min(), whole.max()
    np.testing.assert_array_equal(gray, ((whole - lo) * (255.0 / (hi - lo))).astype(np.float32))


def test_16_bit_png_through_load_pixels_spans_the_full_range() -> None:
    values = np.tile(np.round(np.linspace(0, 4095, 64)).astype(np.uint16), (64, 1))
    pixels = load_pixels(_png16(values), 32)
    assert pixels.shape == (32, 32, 3)
    assert pixels.max() > 250.0
    assert pixels.min() < 5.0
    assert pixels.max() <= 255.0


def test_the_colour_of_a_decoded_image_is_measured_as_on_a_copy() -> None:
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (300, 500, 3)).astype(np.uint8)
    for fmt in ("PNG", "JPEG"):
        data = _encode(Image.fromarray(rgb), fmt)
        with Image.open(io.BytesIO(data)) as image:
            expected = colourfulness(image.convert("RGB"))
        assert decode_image(data).colourfulness == expected, fmt


def test_cmyk_jpeg_is_accepted() -> None:
    image = Image.fromarray(_rgb_pattern()).convert("CMYK")
    gray = decode_grayscale(_encode(image, "JPEG", quality=95))
    assert gray.shape == (24, 40)
    assert 0.0 <= gray.min() and gray.max() <= 255.0
    assert gray.std() > 10


# -- EXIF orientation ----------------------------------------------------------------------
def _jpeg_with_orientation(image: Image.Image, orientation: int | None) -> bytes:
    if orientation is None:
        return _encode(image, "JPEG", quality=95)
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return _encode(image, "JPEG", quality=95, exif=exif.tobytes())


def _corner_marked() -> Image.Image:
    """48 wide x 32 high, dark, with a bright 16x16 block in the top-left corner."""
    pixels = np.full((32, 48), 30, np.uint8)
    pixels[:16, :16] = 230
    pixels[24:, 32:] = 120  # a second, dimmer mark bottom-right
    return Image.fromarray(pixels)


@pytest.mark.parametrize(
    ("orientation", "turns", "bright_corner"),
    [(6, -1, "top-right"), (8, 1, "bottom-left"), (3, 2, "bottom-right")],
)
def test_exif_orientation_is_applied(orientation: int, turns: int, bright_corner: str) -> None:
    image = _corner_marked()
    plain = decode_grayscale(_jpeg_with_orientation(image, None))
    rotated = decode_grayscale(_jpeg_with_orientation(image, orientation))
    # Same JPEG pixel data, different EXIF: the decoded array is the rotated one.
    np.testing.assert_array_equal(rotated, np.rot90(plain, k=turns))
    if orientation in (6, 8):
        assert rotated.shape == (48, 32)
    height, width = rotated.shape
    corners = {
        "top-left": rotated[:8, :8], "top-right": rotated[:8, width - 8:],
        "bottom-left": rotated[height - 8:, :8], "bottom-right": rotated[height - 8:, width - 8:],
    }
    assert max(corners, key=lambda name: corners[name].mean()) == bright_corner


def test_exif_orientation_is_applied_before_resizing() -> None:
    data = _jpeg_with_orientation(_corner_marked(), 6)
    pixels = load_pixels(data, 32)
    assert pixels[:8, -8:].mean() > 180  # the bright block is now top-right
    assert pixels[:8, :8].mean() < 60


# -- accepted formats and the resized output ----------------------------------------------
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_load_pixels_gives_a_square_three_channel_float_image(fmt: str, mode: str) -> None:
    image = Image.fromarray(_rgb_pattern(90, 60)).convert(mode)
    pixels = load_pixels(_encode(image, fmt), 48)
    assert pixels.shape == (48, 48, 3)
    assert pixels.dtype == np.float32
    np.testing.assert_array_equal(pixels[..., 0], pixels[..., 1])
    np.testing.assert_array_equal(pixels[..., 0], pixels[..., 2])
    assert pixels.min() >= 0.0 and pixels.max() <= 255.0
    assert pixels.std() > 10  # an image, not a constant


def test_resize_keeps_a_constant_image_constant_and_in_range() -> None:
    out = resize_to_rgb(np.full((10, 30), 200.0, np.float32), 16)
    assert out.shape == (16, 16, 3)
    np.testing.assert_allclose(out, 200.0, atol=1e-3)


def test_resize_shrinks_to_the_requested_size_preserving_structure() -> None:
    gray = np.zeros((64, 64), np.float32)
    gray[:, 32:] = 255.0
    out = resize_to_rgb(gray, 16)
    assert out.shape == (16, 16, 3)
    assert out[:, :7].max() < 1.0
    assert out[:, 9:].min() > 254.0


# -- the model's input scaling -------------------------------------------------------------
def test_preprocess_equals_vgg16_caffe_scaling_of_load_pixels() -> None:
    from keras.applications import vgg16

    data = _encode(Image.fromarray(_rgb_pattern(70, 50)))
    pixels = load_pixels(data, 32)
    expected = vgg16.preprocess_input(pixels.copy())
    result = to_model_input(load_pixels(data, 32))
    assert result.shape == (32, 32, 3)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-4)
    # Caffe mode: BGR order, ImageNet means subtracted, no division.
    np.testing.assert_allclose(result, pixels - VGG16_BGR_MEANS, atol=1e-4)


def test_to_model_input_does_not_mutate_its_input() -> None:
    pixels = load_pixels(_encode(Image.fromarray(_rgb_pattern())), 24)
    before = pixels.copy()
    out = to_model_input(pixels)
    np.testing.assert_array_equal(pixels, before)
    assert not np.shares_memory(out, pixels)
    np.testing.assert_allclose(out, before - VGG16_BGR_MEANS, atol=1e-4)


def test_to_model_input_scales_a_batch_like_single_images() -> None:
    images = [load_pixels(_encode(Image.fromarray(_rgb_pattern(30 + 10 * i, 40))), 16)
              for i in range(3)]
    batch = np.stack(images)
    out = to_model_input(batch)
    assert out.shape == (3, 16, 16, 3)
    for i, image in enumerate(images):
        np.testing.assert_allclose(out[i], to_model_input(image), atol=1e-5)


# -- rejected input ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "data", [b"", b"patient notes, not an image\n" * 10, b"\x89PNG\r\n\x1a\n"],
    ids=["empty", "text", "png-signature-only"],
)
def test_unreadable_bytes_are_invalid_images(data: bytes) -> None:
    with pytest.raises(InvalidImage) as caught:
        decode_grayscale(data)
    assert caught.value.code == "invalid_image"


def test_truncated_png_is_an_invalid_image(radiography_root: Path) -> None:
    path = sample_files(radiography_root, 1)["COVID"][0]
    data = path.read_bytes()
    decode_grayscale(data)  # the whole file is fine
    with pytest.raises(InvalidImage):
        decode_grayscale(data[: len(data) // 2])
    with pytest.raises(InvalidImage):
        load_pixels(data[: len(data) // 2], 32)


def test_truncated_jpeg_is_an_invalid_image(image_dataset_root: Path) -> None:
    data = sorted((image_dataset_root / "NORMAL").glob("*.jpeg"))[0].read_bytes()
    with pytest.raises(InvalidImage):
        decode_grayscale(data[: len(data) // 2])


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "WEBP"])
def test_other_image_formats_are_unsupported(fmt: str) -> None:
    if fmt not in Image.SAVE:
        pytest.skip(f"this Pillow cannot write {fmt}")
    data = _encode(Image.fromarray(_rgb_pattern()), fmt)
    with pytest.raises(UnsupportedImageFormat) as caught:
        decode_grayscale(data)
    assert fmt in caught.value.message
    assert caught.value.code == "unsupported_media_type"
    assert not isinstance(caught.value, InvalidImage)


def test_too_many_pixels_is_rejected_before_decoding() -> None:
    data = _encode(Image.new("L", (100, 50), 128))
    assert decode_grayscale(data, max_pixels=5000).shape == (50, 100)  # exactly at the limit
    with pytest.raises(ImageTooLarge) as caught:
        decode_grayscale(data, max_pixels=4999)
    assert caught.value.code == "image_too_large"
    with pytest.raises(ImageTooLarge):
        load_pixels(data, 32, max_pixels=4999)


def test_too_large_check_uses_the_header_not_the_file_size() -> None:
    # A tiny, highly compressible file that decodes to many pixels (a decompression bomb).
    data = _encode(Image.new("L", (4000, 4000), 0))
    assert len(data) < 100_000
    with pytest.raises(ImageTooLarge):
        decode_grayscale(data, max_pixels=1_000_000)


def test_every_rejection_is_a_domain_error() -> None:
    for data in (b"", b"GIF89a" + b"\0" * 20, b"{}"):
        with pytest.raises(CxrError):
            decode_grayscale(data)


# -- real X-rays ---------------------------------------------------------------------------
def test_real_radiography_pngs_decode(radiography_root: Path) -> None:
    for label, files in sample_files(radiography_root, 2).items():
        for path in files:
            gray = decode_grayscale(path.read_bytes())
            with Image.open(path) as image:
                assert image.format == "PNG"
                assert gray.shape == (image.height, image.width), label
            assert 0.0 <= gray.min() and gray.max() <= 255.0
            assert gray.std() > 5
            pixels = load_pixels(path.read_bytes(), 64)
            assert pixels.shape == (64, 64, 3)


def test_real_image_dataset_files_decode(image_dataset_root: Path) -> None:
    seen = set()
    for suffix in ("*.jpeg", "*.jpg", "*.png"):
        for path in sorted(image_dataset_root.glob(f"*/{suffix}"))[:2]:
            with Image.open(path) as image:
                seen.add(image.format)
                size = (image.height, image.width)
            gray = decode_grayscale(path.read_bytes())
            assert gray.shape == size
            assert gray.std() > 5
            assert load_pixels(path.read_bytes(), 32).shape == (32, 32, 3)
    assert seen == {"JPEG", "PNG"}


def test_the_numpy_input_scaling_is_keras_vgg16s() -> None:
    """Serving scales a NumPy batch without Keras: the same numbers as Keras' own
    preprocess_input (which training's tensors go through), and the caller's array kept."""
    from keras.applications import vgg16

    pixels = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    kept = pixels.copy()
    np.testing.assert_array_equal(to_model_input(pixels), vgg16.preprocess_input(kept.copy()))
    np.testing.assert_array_equal(pixels, kept)
