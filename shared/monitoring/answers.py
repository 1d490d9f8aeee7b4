"""An answer as the prediction log keeps it, and the log written at once for a process that
answers without the API's writer thread (`cxr predict`)."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import redis

from shared import logs
from shared.config import Settings
from shared.errors import CxrError
from shared.ml.preprocessing import decode_image
from shared.monitoring.kept_images import KeptImages, kept_pixels
from shared.monitoring.records import LoggedPrediction, PredictionSource
from shared.monitoring.stores import open_prediction_log
from shared.schemas import Prediction

log = logging.getLogger(__name__)


def answer_record(prediction: Prediction, prediction_id: str, source: PredictionSource,
                  at: datetime, image_sha256: str = "") -> LoggedPrediction:
    """The log's record of an answer (the API's writer fills in the sha256 off the answer
    path)."""
    shift = prediction.distribution_shift
    return LoggedPrediction(
        prediction_id=prediction_id, time=at, version=prediction.model_version,
        label=prediction.label, probabilities=prediction.probabilities,
        reliable=prediction.reliable, reasons=list(prediction.reasons),
        shift_score=shift.score if shift is not None else None,
        shifted=shift.flagged if shift is not None else None,
        image_sha256=image_sha256, source=source, request_id=logs.request_id.get())


def log_answers_now(settings: Settings, answers: Sequence[Prediction | CxrError],
                    images: Sequence[bytes | None], source: PredictionSource) -> bool:
    """Give each answered image its ``prediction_id`` and write it to the log now (its image
    kept with CXR_KEEP_IMAGES); False, with a warning, when the log cannot be written: the
    answers stand either way."""
    if not settings.prediction_log:
        return False
    at, records = datetime.now(UTC), []
    kept = KeptImages(settings.effective_kept_images_dir) if settings.keep_images else None
    for answer, image in zip(answers, images, strict=True):
        if not isinstance(answer, Prediction) or image is None:
            continue
        answer.prediction_id = uuid.uuid4().hex
        record = answer_record(answer, answer.prediction_id, source, at,
                               hashlib.sha256(image).hexdigest())
        if kept is not None:
            kept.save(record.prediction_id,
                      kept_pixels(decode_image(image, settings.max_image_pixels)))
            record.image_kept = True
        records.append(record)
    try:
        open_prediction_log(settings).add(records)
    except (redis.RedisError, sqlite3.Error, OSError, CxrError) as exc:
        log.warning("the answers were not logged: %s", exc)
        if kept is not None:
            kept.remove(record.prediction_id for record in records)
        for answer in answers:  # an id names a record, or nothing
            if isinstance(answer, Prediction):
                answer.prediction_id = None
        return False
    return True
