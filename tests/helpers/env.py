"""Where the suite finds real data and services, and the keys its services run with."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NoReturn

import pytest

from shared.config import ApiKey, key_digest

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
RADIOGRAPHY = SHARED_DATA / "covid19-radiography"
IMAGE_DATASET = SHARED_DATA / "covid19-image-dataset"
# One Redis database per pytest-xdist worker (gw0 15, gw1 13, gw2 12, ...; 14 is the
# replicas benchmark's), so that parallel tests never see each other's queues.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
REDIS_URL = os.environ.get("CXR_TEST_REDIS_URL",
                           f"redis://127.0.0.1:6379/{15 if _WORKER == 0 else 14 - _WORKER}")
# CI sets this so that missing real data or a missing Redis fails the run instead of
# skipping tests.
REQUIRE_SERVICES = os.environ.get("CXR_TEST_REQUIRE_SERVICES") == "1"
# API keys of the test services: mutating endpoints always need an admin one.
ADMIN_KEY, READER_KEY = "test-admin-key-7f3c", "test-reader-key-91ab"
LABELER_KEY = "test-labeler-key-5d0e"  # labels answers (and reads)
API_KEYS = [ApiKey(name=name, sha256=key_digest(key), role=name)
            for name, key in (("admin", ADMIN_KEY), ("reader", READER_KEY),
                              ("labeler", LABELER_KEY))]
API_KEYS_ENV = json.dumps([key.model_dump() for key in API_KEYS])  # CXR_API_KEYS
AS_ADMIN = {"X-API-Key": ADMIN_KEY}
# What the suite runs with, in process (tests/conftest.py sets it) and in the services it
# starts. It trains versions on a few dozen images, whose test balanced accuracy interval
# includes chance; the promotion decision would keep every one of them a candidate (the tests
# of that refusal turn it back on). The shadow at nice 19, not SCHED_IDLE: on a machine the
# suite keeps busy, an idle-class thread may wait minutes for a core, holding its process's
# GIL meanwhile (the shadow's own tests set its priority).
SUITE_ENV = {"CXR_PROMOTION_REFUSE_CHANCE": "false", "CXR_SHADOW_PRIORITY": "low"}
# What the processes the suite starts (`cxr serve`, `cxr worker`, `cxr train`) run with
# beyond that: no ONNX export, whose conversion is most of a tiny job's publishing time; the
# export and ONNX serving are tested in process (the shared trained version).
# A heartbeat every half second relays a cancel and a takeover sooner than the default 2 s.
PROCESS_ENV = {**SUITE_ENV, "CXR_EXPORT_ONNX": "false",
               "CXR_JOB_HEARTBEAT_INTERVAL_S": "0.5"}
# S3 credentials of the loopback server; moto accepts any, boto3 needs some.
S3_ENV = {"AWS_ACCESS_KEY_ID": "cxr-test", "AWS_SECRET_ACCESS_KEY": "cxr-test-secret",
          "AWS_DEFAULT_REGION": "us-east-1"}


def unavailable(reason: str) -> NoReturn:
    """Skip a test whose data or service is absent on this machine; fail it where every one
    is required (CXR_TEST_REQUIRE_SERVICES=1, as in CI), so that no test hides there."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (CXR_TEST_REQUIRE_SERVICES=1 requires it)", pytrace=False)
    pytest.skip(reason)


def real_data(path: Path) -> Path:
    """``path``, a folder of real X-rays under ../shared/data, or the test is unavailable."""
    if not path.is_dir():
        unavailable(f"real X-rays not found at {path} (../shared/data is absent on this "
                    "machine)")
    return path


def sample_files(root: Path, per_class: int) -> dict[str, list[Path]]:
    """The first ``per_class`` images of each class of the radiography layout."""
    return {c.name: sorted((c / "images").iterdir())[:per_class]
            for c in sorted(root.iterdir()) if (c / "images").is_dir()}
