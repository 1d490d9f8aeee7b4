"""What an answer leaves behind: each answered image gets a prediction id, its record is
handed to the prediction log's writer, and its bytes to the shadow. Both only queue: the
answer is not measurably slower for it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from api.monitoring.recorder import PredictionRecorder
from api.monitoring.shadow import ShadowScorer
from shared.errors import CxrError
from shared.monitoring.answers import answer_record
from shared.monitoring.records import PredictionSource
from shared.schemas import Prediction

# Who sent the image, as the web page and the CLI say; anything else is "api".
SOURCE_HEADER = "X-CXR-Source"
_SENT_SOURCES: dict[str, PredictionSource] = {"page": "page", "cli": "cli"}


def source_of(header: str | None) -> PredictionSource:
    """The source named by an ``X-CXR-Source`` header value."""
    return _SENT_SOURCES.get((header or "").strip().lower(), "api")


@dataclass(frozen=True)
class AnswerLog:
    """The answer path's side of the prediction log and the shadow (``enabled`` false:
    CXR_PREDICTION_LOG off, answers carry no id)."""

    recorder: PredictionRecorder
    shadow: ShadowScorer
    enabled: bool = True

    def answered(self, answers: Sequence[Prediction | CxrError], images: Sequence[bytes],
                 source: PredictionSource, *, shadowed: bool = True) -> None:
        """Give each answered image of a request (``answers[i]`` for ``images[i]``) its
        ``prediction_id``, and queue it for the log and, with ``shadowed``, the shadow."""
        if not self.enabled:
            return
        at = datetime.now(UTC)
        for answer, image in zip(answers, images, strict=True):
            if not isinstance(answer, Prediction):
                continue
            answer.prediction_id = uuid.uuid4().hex
            self.recorder.record(answer_record(answer, answer.prediction_id, source, at),
                                 image)
            if shadowed:
                self.shadow.offer(image, answer.prediction_id, answer.model_version)
