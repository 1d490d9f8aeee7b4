"""Several hosts' worth of the system on one machine: two API processes and two workers on one
Redis and one S3 store (moto on loopback), as `docker compose up --scale api=2 --scale
worker=2` runs it. Jobs from both APIs are spread over both workers; an activation reaches
both APIs within their poll interval; every answer names its version; the logs are JSON lines
that tie a request to its job; each worker serves its own metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.dicom import MARKER_ID, MARKER_NAME, gray_of, make_dicom
from tests.helpers.env import ADMIN_KEY, sample_files
from tests.helpers.http import TINY_RETRAIN as TINY
from tests.helpers.http import dataset_zip, predict, wait_job
from tests.helpers.services import S3Server, Service, free_port, start_service

pytestmark = pytest.mark.integration

POLL_S = 1.0


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, s3_server: S3Server) -> Iterator[dict[str, Any]]:
    shared = {"CXR_BROKER_URL": redis_url, "CXR_DATA_DIR": str(tmp_path / "data"),
              "CXR_MODELS_URI": f"s3://{s3_server.new_bucket()}/models",
              "CXR_S3_ENDPOINT_URL": s3_server.endpoint, "CXR_LOG_FORMAT": "json",
              "CXR_RELOAD_INTERVAL_S": str(POLL_S), "CXR_WORKER_THREADS": "1"}
    nodes: dict[str, Service] = {}
    metrics_ports: dict[str, int] = {}
    try:  # the four start, and later stop, at once
        for name in ("worker-a", "worker-b"):
            metrics_ports[name] = free_port()
            nodes[name] = start_service(tmp_path / name, None, processes=("worker",),
                                        extra_env={**shared, "CXR_WORKER_METRICS_PORT":
                                                   str(metrics_ports[name])}, wait=False)
        for name in ("api-1", "api-2"):
            nodes[name] = start_service(tmp_path / name, None, processes=("serve",),
                                        extra_env=shared, wait=False)
        for node in nodes.values():
            node.ready()
        yield {"nodes": nodes, "metrics_ports": metrics_ports}
    finally:
        for node in nodes.values():
            node.terminate()
        for node in nodes.values():
            node.stop()


def _worker_metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _loading_started(node: Service, version: str) -> datetime:
    line = next(line for line in node.log_lines()
                if line["message"] == f"loading model version {version}")
    return datetime.fromisoformat(line["time"])


def _until_all_serve(clients: dict[str, httpx.Client], image: bytes, version: str,
                     first: bool, timeout: float = 60) -> dict[str, float]:
    """Seconds until each API answers from ``version``; every answer names its version, and
    after the first activation, every prediction is answered (a swap has no gap)."""
    started, reached = time.monotonic(), {}
    while len(reached) < len(clients):
        for name, client in clients.items():
            if name in reached:
                continue
            response = predict(client, image)
            if first and response.status_code == 503:
                assert response.json()["error"]["code"] == "no_model"
                continue
            assert response.status_code == 200, response.text
            assert response.headers["X-Model-Version"] == response.json()["model_version"]
            if response.json()["model_version"] == version:
                reached[name] = time.monotonic() - started
        assert time.monotonic() - started < timeout, f"not all APIs serve {version}: {reached}"
        time.sleep(0.05)
    return reached


def test_two_apis_and_two_workers_on_one_redis_and_one_store(
        cluster: dict[str, Any], radiography_root: Path) -> None:
    nodes: dict[str, Service] = cluster["nodes"]
    apis = {name: nodes[name].client() for name in ("api-1", "api-2")}
    image = sample_files(radiography_root, 20)["Normal"][-1].read_bytes()
    created = apis["api-1"].post("/datasets", data={"name": "tiny"},
                                 files={"file": ("tiny.zip", dataset_zip(radiography_root, 8))})
    assert created.status_code == 201, created.text

    # One job through each API, at once: each worker takes one.
    jobs = {}
    for name, client in apis.items():
        accepted = client.post("/retrain", json={"dataset": "tiny", **TINY, "seed": 7,
                                                 "activate": "never"},
                               headers={"X-Request-ID": f"replica-test-{name}"})
        assert accepted.status_code == 202, accepted.text
        assert accepted.headers["X-Request-ID"] == f"replica-test-{name}"
        jobs[name] = accepted.json()["job_id"]
    done = {name: wait_job(apis["api-2"], job_id, timeout=400) for name, job_id in jobs.items()}
    assert all(job["state"] == "succeeded" for job in done.values()), done
    assert {job["request_id"] for job in done.values()} == {f"replica-test-{n}" for n in apis}
    versions = [done[name]["model_version"] for name in apis]

    ran_by = {}
    for worker in ("worker-a", "worker-b"):
        started = [line for line in nodes[worker].log_lines()
                   if line.get("message") == "job started"]
        assert len(started) == 1, f"{worker} started {started}"
        ran_by[started[0]["job_id"]] = worker
    assert set(ran_by) == set(jobs.values())  # both workers ran one job each

    # Activate through one API: both start loading within the poll interval, and serve the
    # version once it is loaded.
    for version, via in ((versions[0], "api-2"), (versions[1], "api-1")):
        activated_at = datetime.now(UTC)
        # confirmed: a tiny version's test interval includes chance
        assert apis[via].post(f"/models/{version}/activate",
                              params={"force": "true"}).status_code == 200
        reached = _until_all_serve(apis, image, version, first=version == versions[0])
        noticed = {api: _loading_started(nodes[api], version) - activated_at for api in apis}
        assert all(delay.total_seconds() < POLL_S + 0.5 for delay in noticed.values()), noticed
        print(f"\nactivated {version} via {via}: "  # noqa: T201
              + ", ".join(f"{api} loading after {noticed[api].total_seconds():.2f} s, "
                          f"serving after {reached[api]:.2f} s" for api in sorted(apis)))

    both_follow_one_shadow(apis, image, shadow=versions[0])

    # A DICOM with a patient in its header, sent with the admin key.
    dicom = make_dicom(gray_of(image), 8)
    assert predict(apis["api-1"], dicom).status_code == 200
    bad = apis["api-2"].post("/predict", files={"file": ("x.png", b"not an image")},
                             headers={"X-Request-ID": "bad id with spaces"})
    assert bad.status_code == 400
    assert bad.headers["X-Request-ID"] != "bad id with spaces"

    time.sleep(1)  # an access line is written just after its answer is sent
    epochs = done["api-1"]["progress"]["epochs"]
    _check_logs(nodes, jobs, bad.headers["X-Request-ID"], epochs)
    _check_worker_metrics(cluster["metrics_ports"], ran_by, epochs)


def both_follow_one_shadow(apis: dict[str, httpx.Client], image: bytes, shadow: str) -> None:
    """A shadow started through one API is loaded by both; each scores what it answered, into
    one log (Redis) that either API reports on."""
    assert apis["api-1"].post(f"/models/{shadow}/shadow").status_code == 200
    deadline = time.monotonic() + 60
    while not all(client.get(f"/models/{shadow}/shadow").json()["loaded"]
                  for client in apis.values()):
        assert time.monotonic() < deadline, "not every API loaded the shadow"
        time.sleep(0.2)
    answered = {name: predict(client, image).json()["prediction_id"]
                for name, client in apis.items()}
    deadline = time.monotonic() + 60
    for name, prediction_id in answered.items():  # asked of the other API: one log
        other = apis["api-2" if name == "api-1" else "api-1"]
        while other.get(f"/predictions/{prediction_id}").json().get("shadow") is None:
            assert time.monotonic() < deadline, f"{name}'s answer was not shadowed"
            time.sleep(0.2)
    report = apis["api-2"].get(f"/models/{shadow}/shadow").json()
    assert report["current"] and report["images"] >= 2 and report["seen"] >= 2
    assert apis["api-2"].delete(f"/models/{shadow}/shadow").status_code == 200


def _check_logs(nodes: dict[str, Service], jobs: dict[str, str], bad_request: str,
                epochs: int) -> None:
    lines = {name: node.log_lines() for name, node in nodes.items()}
    text = "\n".join(json.dumps(line) for node_lines in lines.values() for line in node_lines)
    for secret in (ADMIN_KEY, MARKER_NAME, MARKER_ID, "PNG\\r\\n"):
        assert secret not in text
    assert all({"time", "level", "logger", "message"} <= line.keys()
               for node_lines in lines.values() for line in node_lines)
    assert not [line for api in jobs for line in lines[api] if line["logger"] == "uvicorn.access"]
    # The API's access line of each retrain request, and the worker's lines of its job.
    for api, job_id in jobs.items():
        request = f"replica-test-{api}"
        access = [line for line in lines[api] if line.get("logger") == "api.access"
                  and line.get("request_id") == request]
        assert [(a["method"], a["route"], a["status"]) for a in access] == [
            ("POST", "/retrain", 202)]
        worker_lines = [line for name in ("worker-a", "worker-b") for line in lines[name]
                        if line.get("job_id") == job_id]
        assert {line["request_id"] for line in worker_lines} == {request}
        messages = [line["message"] for line in worker_lines]
        assert messages[0] == "job started" and messages[-1] == "job succeeded"
        epoch_lines = [line for line in worker_lines if line["message"].startswith("epoch ")]
        assert [e["epoch"] for e in epoch_lines] == list(range(1, epochs + 1))
        assert {"loss", "accuracy", "val_loss", "phase"} <= epoch_lines[0].keys()
        ended = worker_lines[-1]
        assert ended["state"] == "succeeded" and ended["duration_s"] > 0
    refused = [line for line in lines["api-2"] if line.get("request_id") == bad_request
               and line["logger"] == "api.access"]
    assert [(r["status"], r["error_code"]) for r in refused] == [(400, "invalid_image")]
    loads = [line for api in ("api-1", "api-2") for line in lines[api]
             if line["message"].startswith("now serving model version")]
    assert len(loads) >= 2


def _check_worker_metrics(ports: dict[str, int], ran_by: dict[str, str], epochs: int) -> None:
    for worker, port in ports.items():
        samples = _worker_metrics(port)
        ran = sum(1 for w in ran_by.values() if w == worker)
        key = (("kind", "train"), ("outcome", "succeeded"))
        assert samples[("cxr_worker_jobs_total", key)] == ran
        assert samples[("cxr_worker_job_duration_seconds_count", key)] == ran
        assert samples[("cxr_worker_job_duration_seconds_sum", key)] > 0
        assert samples[("cxr_worker_epochs_total", ())] == ran * epochs
