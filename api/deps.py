"""Dependencies, defined once as ``Annotated`` aliases and used as parameter types.

Each object is created once in the app's lifespan (``api.main``) and kept on ``app.state``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from celery import Celery
from fastapi import Depends, Request

from api.inference.batching import Batcher
from api.inference.decode_budget import DecodeBudget
from api.inference.predicting import Predictor
from api.inference.serving import ModelServer
from api.inference.versions_cache import VersionCache
from api.metrics import ServiceMetrics
from api.monitoring.observe import AnswerLog
from api.monitoring.recorder import PredictionRecorder
from api.monitoring.shadow import ShadowScorer
from shared.config import Settings
from shared.job_store import JobStore
from shared.monitoring.audit import AuditStore
from shared.monitoring.prediction_log import PredictionLog
from shared.registry import Registry


def _from_state(name: str) -> Callable[[Request], Any]:
    def get(request: Request) -> Any:
        return getattr(request.app.state, name)

    get.__name__ = f"get_{name}"
    return get


SettingsDep = Annotated[Settings, Depends(_from_state("settings"))]
RegistryDep = Annotated[Registry, Depends(_from_state("registry"))]
ModelServerDep = Annotated[ModelServer, Depends(_from_state("model_server"))]
JobStoreDep = Annotated[JobStore, Depends(_from_state("jobs"))]
QueueDep = Annotated[Celery, Depends(_from_state("queue"))]
BatcherDep = Annotated[Batcher, Depends(_from_state("batcher"))]
ServiceMetricsDep = Annotated[ServiceMetrics, Depends(_from_state("metrics"))]
DecodeBudgetDep = Annotated[DecodeBudget, Depends(_from_state("decode_budget"))]
VersionCacheDep = Annotated[VersionCache, Depends(_from_state("version_cache"))]
PredictionLogDep = Annotated[PredictionLog, Depends(_from_state("prediction_log"))]
AuditDep = Annotated[AuditStore, Depends(_from_state("audit"))]
# The log's writer (``flush`` before reading an answer just given), the shadow, and what the
# answering routes hand both.
RecorderDep = Annotated[PredictionRecorder, Depends(_from_state("recorder"))]
ShadowScorerDep = Annotated[ShadowScorer, Depends(_from_state("shadow"))]
AnswerLogDep = Annotated[AnswerLog, Depends(_from_state("answer_log"))]


def _predictor(settings: SettingsDep, server: ModelServerDep, batcher: BatcherDep,
               budget: DecodeBudgetDep) -> Predictor:
    return Predictor(settings, server, batcher, budget)


PredictorDep = Annotated[Predictor, Depends(_predictor)]
