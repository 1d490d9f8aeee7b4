"""The FastAPI application: ``uvicorn --factory api.main:create_app``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline
from threadpoolctl import threadpool_limits

from api.inference.batching import Batcher
from api.inference.decode_budget import DecodeBudget, MiB
from api.inference.serving import ModelServer
from api.inference.versions_cache import VersionCache
from api.metrics import ServiceMetrics
from api.monitoring.observe import AnswerLog
from api.monitoring.recorder import PredictionRecorder
from api.monitoring.shadow import ShadowScorer, shadow_limits, shadow_loader
from api.oip import routes as oip
from api.plumbing import errors
from api.plumbing.audit_trail import AuditTrail
from api.plumbing.auth import warn_if_no_keys
from api.plumbing.redirects import RelativeRedirects
from api.plumbing.request_log import AccessLog, UnfinishedAnswerFilter
from api.plumbing.request_metrics import RequestMetrics
from api.routes import (
    audit,
    datasets,
    health,
    jobs,
    metrics,
    models,
    page,
    predict,
    predictions,
    shadow,
)
from shared.config import Settings, get_settings
from shared.job_store import open_job_store
from shared.loading import load_version
from shared.logs import configure_logging
from shared.ml.runtimes import configure_tensorflow_threads, warm_batch_sizes
from shared.monitoring.audit import open_audit_store
from shared.monitoring.kept_images import KeptImages
from shared.monitoring.stores import open_prediction_log
from shared.registry import open_registry
from shared.task_queue import make_celery


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    warn_if_no_keys(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app.state.registry = open_registry(settings)
    app.state.jobs = open_job_store(settings)
    app.state.queue = make_celery(settings)
    configure_tensorflow_threads(settings.inference_threads, settings.inference_inter_op_threads)
    # The forward pass owns the cores; the shift and gate scores' small matrix products
    # beside it run faster on one BLAS thread than on a pool that fights it for them.
    threadpool_limits(limits=1, user_api="blas")
    loader = partial(load_version, runtime=settings.inference_runtime,
                     precision=settings.inference_precision,
                     warm_batch_sizes=warm_batch_sizes(settings.batch_max_size),
                     threads=settings.inference_threads, timings={})
    observer: ServiceMetrics = app.state.metrics
    server = ModelServer(app.state.registry, settings.reload_interval_s, loader,
                         on_load=observer.model_loaded)
    app.state.model_server = server
    app.state.version_cache = VersionCache(server)  # versions named by infer requests
    batcher = Batcher(settings.batch_max_size, settings.batch_max_delay_ms / 1000,
                      observer=observer)
    app.state.batcher = batcher
    recorder, scorer = _monitoring(app, settings, observer)
    server.start()
    batcher.start()
    recorder.start()
    if settings.prediction_log:  # without the log, no shadow answer could be kept
        scorer.start()
    try:
        yield
    finally:
        batcher.stop()
        server.stop()
        scorer.stop()
        recorder.stop()  # after the shadow: its last answers are written too
        app.state.version_cache.clear()


def _monitoring(app: FastAPI, settings: Settings,
                observer: ServiceMetrics) -> tuple[PredictionRecorder, ShadowScorer]:
    """The prediction log, the audit trail, the log's writer and the shadow, on app.state."""
    app.state.prediction_log = open_prediction_log(settings)
    app.state.audit = open_audit_store(settings)
    recorder = PredictionRecorder(
        app.state.prediction_log, KeptImages(settings.effective_kept_images_dir),
        settings.max_image_pixels, keep_images=settings.keep_images, audit=app.state.audit,
        observer=observer)
    scorer = ShadowScorer(app.state.registry, recorder, shadow_loader(settings),
                          poll_interval_s=settings.reload_interval_s,
                          queue_size=settings.shadow_queue_size,
                          limits=shadow_limits(settings), observer=observer,
                          priority=settings.shadow_priority)
    app.state.recorder, app.state.shadow = recorder, scorer
    app.state.answer_log = AnswerLog(recorder, scorer, enabled=settings.prediction_log)
    return recorder, scorer


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; settings default to the environment's."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_format)
    # /docs and /redoc from Swagger UI's and ReDoc's files in the package, not a CDN: the
    # pages render where the API runs without internet access. /redoc is the page router's,
    # which also keeps ReDoc's logo from being fetched; the icon is the page's own.
    app = FastAPIOffline(
        title="cxr-service",
        summary="Chest X-ray classification (VGG16 transfer learning) with retraining.",
        version="0.1.0",
        lifespan=lifespan,
        redoc_url=None,
        favicon_url=page.FAVICON_URL,
    )
    app.state.settings = settings
    app.state.decode_budget = DecodeBudget(settings.decode_budget_mb * MiB,
                                           settings.decode_wait_s, settings.decode_max_waiting,
                                           settings.effective_decode_threads)
    app.state.metrics = ServiceMetrics(
        jobs=lambda: getattr(app.state, "jobs", None),
        prediction_log=lambda: getattr(app.state, "prediction_log", None))
    errors.install(app)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["*"],
                           expose_headers=["X-Model-Version", "X-Request-ID"])

    app.add_middleware(RelativeRedirects)
    # Inside the access log, so that its records carry the request id being logged.
    app.add_middleware(AuditTrail)
    # Added last, so outermost: they also see what the routes refuse.
    app.add_middleware(RequestMetrics, observer=app.state.metrics)
    app.add_middleware(AccessLog)
    uvicorn_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, UnfinishedAnswerFilter) for f in uvicorn_log.filters):
        uvicorn_log.addFilter(UnfinishedAnswerFilter())
    # shadow before models: GET /models/{version}/{artifact} would take /models/{v}/shadow.
    for router in (predict.router, datasets.router, jobs.router, shadow.router, models.router,
                   predictions.router, audit.router, health.router, metrics.router,
                   page.router, oip.health_router, oip.router):
        app.include_router(router)
    return app
