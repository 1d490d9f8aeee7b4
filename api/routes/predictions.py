"""The prediction log: what the service answered, and the labels the reading room confirms."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request

from api.deps import PredictionLogDep, RecorderDep, RegistryDep, SettingsDep
from api.plumbing.auth import LabelerKey, Reader
from api.plumbing.body_guard import GuardedRoute
from api.plumbing.errors import responses
from api.routes.query_types import Since
from shared.datasets import dataset_path, match_classes
from shared.errors import InvalidDataset, ModelNotFound, PredictionNotFound, UnknownClass
from shared.monitoring.kept_images import KeptImages
from shared.monitoring.records import ConfirmedLabel, LoggedPrediction, PredictionQuery
from shared.monitoring.views import LabelledPrediction, LabelRequest, PredictionList
from shared.registry import Registry

log = logging.getLogger(__name__)

# A label may follow its answer at once, while the answer still waits in the recorder's
# queue: it is written out first, for at most this long.
FLUSH_S = 2.0

# Reads answer 401 without a key when CXR_REQUIRE_KEY_FOR_READS is on, and 503 while the
# log's store (Redis) is unreachable.
router = APIRouter(route_class=GuardedRoute, prefix="/predictions", tags=["predictions"],
                   dependencies=Reader, responses=responses(401, 503))


@router.get("", response_model=PredictionList, responses=responses(422))
def list_predictions(
    predictions: PredictionLogDep,
    version: Annotated[str | None, Query(max_length=64)] = None,
    labelled: bool | None = None,
    reliable: bool | None = None,
    since: Since = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> PredictionList:
    """Answered images within the log's retention, newest first, by version, whether
    labelled, whether reliable, and since when."""
    return PredictionList(predictions=predictions.query(PredictionQuery(
        version=version, labelled=labelled, reliable=reliable, since=since, limit=limit)))


@router.get("/{prediction_id}", response_model=LoggedPrediction,
            responses=responses(404, 422))
def get_prediction(prediction_id: str, predictions: PredictionLogDep) -> LoggedPrediction:
    """One answered image: what it was answered, its confirmed label, the shadow's answer."""
    return predictions.get(prediction_id)


@router.post("/{prediction_id}/label", response_model=LabelledPrediction,
             responses=responses(400, 401, 403, 404, 422))
def label_prediction(prediction_id: str, body: LabelRequest, key: LabelerKey,
                     request: Request, settings: SettingsDep, registry: RegistryDep,
                     predictions: PredictionLogDep,
                     recorder: RecorderDep) -> LabelledPrediction:
    """Record the class the reading room confirmed (a labeler or admin key); a relabel
    replaces it. A kept image is filed into the labels dataset under that class."""
    recorder.flush(FLUSH_S)
    record = predictions.get(prediction_id)
    label = version_spelling(body.label, _classes_of(record, registry))
    confirmed = ConfirmedLabel(label=label, by=key.name, role=key.role,
                               at=predictions.clock())
    updated = predictions.confirm(prediction_id, confirmed)
    filed = _file(updated, label, settings.effective_kept_images_dir,
                  settings.data_dir, settings.labels_dataset)
    request.state.audit_detail = f"class {label}" + (f", filed into {filed}" if filed else "")
    return LabelledPrediction(**updated.model_dump(), filed_into=filed)


def _classes_of(record: LoggedPrediction, registry: Registry) -> list[str]:
    try:
        return list(registry.manifest(record.version).classes)
    except ModelNotFound:  # deleted since: its answer named every class it had
        return list(record.probabilities)


def version_spelling(label: str, classes: list[str]) -> str:
    """``label`` as the version spells it, matched as datasets' class folders are
    ('VIRAL_PNEUMONIA' is 'Viral Pneumonia'); UnknownClass for none of them."""
    try:
        return classes[match_classes([label], classes)[label]]
    except InvalidDataset:
        raise UnknownClass(f"{label!r} is not one of the version's classes {classes}") from None


def _file(record: LoggedPrediction, label: str, kept_dir: Path, data_dir: Path,
          dataset: str) -> str | None:
    """The dataset the kept image was filed into; None when the image was not kept."""
    if not record.image_kept:
        return None
    try:
        KeptImages(kept_dir).file_into(record.prediction_id, dataset_path(data_dir, dataset),
                                       label)
    except PredictionNotFound:  # pruned since: the label stands, there is nothing to file
        log.warning("the kept image of %s is gone; not filed", record.prediction_id)
        return None
    return dataset
