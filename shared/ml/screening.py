"""What happens to an image before a version scores it: read, decoded as the version was
trained, prepared, and screened by the chest-radiograph gate (``ServedVersion.screen_file``).

The types here are what every caller hands the one answering path (``ServedVersion``'s
``submit_images`` and ``answer_images``): the API, the command line and external evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.config import DEFAULT_MAX_IMAGE_PIXELS, GateMode, Settings
from shared.errors import CxrError, InvalidImage
from shared.schemas import ChestXrayCheck, Prediction

# Image bytes, or a file read only when its turn comes (a large folder is never all in memory).
ImageSource = bytes | Path
# Held while one image is decoded, prepared and handed to its pass (the API's pixel budget).
Hold = Callable[[bytes], AbstractContextManager[object]]


@dataclass(frozen=True)
class ImageLimits:
    """What an image must meet to be answered: at most ``max_pixels``, and the
    chest-radiograph gate's verdict read per ``gate`` ("refuse": such an image is refused;
    "warn": answered, marked not a finding; "off": not asked)."""

    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    gate: GateMode = "refuse"

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageLimits:
        return cls(settings.max_image_pixels, settings.xray_gate)


@dataclass(frozen=True)
class Screened:
    """One image as a version sees it: the gray image prepared at full size (cropped and
    equalized; a heat map is drawn on it), the model's pixels (size, size, 3) in [0, 255],
    the gate's verdict (None when not asked or the version has no gate), and the gate's
    features of the pixels where the gate or the shift reference reads them (computed once:
    the shift's input detector reads the same features the gate does)."""

    prepared: np.ndarray
    pixels: np.ndarray
    check: ChestXrayCheck | None = None
    inputs: np.ndarray | None = None


def read_image(source: ImageSource) -> bytes:
    """The bytes of an image; an unreadable file fails alone, as a damaged image does."""
    if isinstance(source, bytes):
        return source
    try:
        return source.read_bytes()
    except OSError as exc:
        raise InvalidImage(f"cannot read {source}: {exc.strerror or exc}") from exc


def no_hold(data: bytes) -> AbstractContextManager[object]:
    return nullcontext()


def with_check(prediction: Prediction, check: ChestXrayCheck | None) -> Prediction:
    """An answer with the gate's verdict; one that did not pass is not a finding."""
    if check is None:
        return prediction
    why = prediction.reasons if check.passed else ["not_a_chest_xray", *prediction.reasons]
    return prediction.model_copy(update={"chest_xray": check, "reasons": why,
                                         "reliable": not why})


def checked(future: Future[Prediction], check: ChestXrayCheck | None) -> Future[Prediction]:
    """The answer ``future`` will hold, with the gate's verdict added."""
    if check is None:
        return future
    answer: Future[Prediction] = Future()

    def done(source: Future[Prediction]) -> None:
        error = source.exception()
        if error is not None:
            answer.set_exception(error)
        else:
            answer.set_result(with_check(source.result(), check))

    future.add_done_callback(done)
    return answer


def failed(error: BaseException) -> Future[Prediction]:
    future: Future[Prediction] = Future()
    future.set_exception(error)
    return future


def outcome(future: Future[Prediction]) -> Prediction | CxrError:
    """A finished image's answer, or its own error; any other failure is raised."""
    error = future.exception()
    if isinstance(error, CxrError):
        return error
    return future.result()
