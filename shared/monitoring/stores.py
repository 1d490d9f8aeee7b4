"""Opening the prediction log that sits beside the configured broker (and the job store)."""

from __future__ import annotations

from shared.config import Settings
from shared.job_store import Clock, redis_client, utc_now
from shared.monitoring.prediction_log import PredictionLog
from shared.monitoring.prediction_log_redis import RedisPredictionLog
from shared.monitoring.prediction_log_sqlite import SqlitePredictionLog


def open_prediction_log(settings: Settings, *, clock: Clock = utc_now) -> PredictionLog:
    """Redis where the broker is Redis, else a SQLite file in CXR_STATE_DIR."""
    if settings.uses_redis:
        return RedisPredictionLog(redis_client(settings), settings.prediction_log_days,
                                  clock=clock)
    return SqlitePredictionLog(settings.state_dir / "predictions.sqlite",
                               settings.prediction_log_days, clock=clock)
