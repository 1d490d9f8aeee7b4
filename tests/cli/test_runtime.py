"""TensorFlow starts without its C++ lines: the filter of what its libraries print while they
load, and real `cxr` processes on a CPU machine, whatever thread first imports it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from shared.registry.local import LocalRegistry
from tests.helpers.env import API_KEYS_ENV, REPO, sample_files
from tests.helpers.services import Service, free_port, wait_healthy
from tests.helpers.versions import publish_random

# What the issue saw on a CPU machine: absl's lines (oneDNN's notice, "failed call to cuInit"
# at ERROR after loading), any severity.
NATIVE = re.compile(r"^[EWIF]\d{4} |oneDNN|cuInit|absl::InitializeLog")
LOADING = (b"WARNING: All log messages before absl::InitializeLog() is called are written to "
           b"STDERR\n"
           b"I0000 00:00:1796391040.601880   11510 cudart_stub.cc:31] Could not find cuda "
           b"drivers on your machine, GPU will not be used.\n"
           b"W0000 00:00:1796391040.601990   11510 port.cc:9] a warning\n"
           b"E0000 00:00:1796391060.628813   11510 cuda_platform.cc:52] failed call to cuInit\n"
           b"F0000 00:00:1796391060.628900   11510 main.cc:1] a fatal error\n"
           b"something else\n")


def test_tensorflow_starts_quietly_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    from cxr_cli import runtime

    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    runtime.start_tensorflow(verbose=True)
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    runtime.start_tensorflow(verbose=False)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    runtime.start_tensorflow(verbose=False)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"  # the user's own choice stands


@pytest.mark.parametrize(("level", "kept"), [
    ("3", ["F0000", "something"]), ("2", ["E0000", "F0000", "something"]),
    ("0", ["WARNING:", "I0000", "W0000", "E0000", "F0000", "something"])])
def test_what_libraries_print_while_loading_is_kept_at_the_level_asked(
    level: str, kept: list[str], monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from cxr_cli import runtime

    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", level)
    with runtime.native_stderr_filtered():
        os.write(2, LOADING)
    assert [line.split()[0] for line in capfd.readouterr().err.splitlines()] == kept


def test_serving_and_predicting_print_no_tensorflow_line(
    radiography_root: Path, tmp_path: Path
) -> None:
    """The API loads TensorFlow in the thread that loads its model; `cxr predict` at once.
    Neither may print a line of TensorFlow's C++ libraries, unless asked (--verbose)."""
    registry = LocalRegistry(tmp_path / "models")
    publish_random(registry, seed=3, activate=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CXR_") and k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update({"CXR_MODELS_DIR": str(tmp_path / "models"), "CXR_STATE_DIR": str(
        tmp_path / "state"), "CXR_API_KEYS": API_KEYS_ENV, "CXR_LOG_FORMAT": "text"})
    service = Service(url=f"http://127.0.0.1:{free_port()}", env=env, workdir=tmp_path)
    service.start("serve")
    image = sample_files(radiography_root, 1)["COVID"][0]
    predicted = subprocess.Popen([sys.executable, "-m", "cxr_cli", "predict", str(image)],
                                 cwd=REPO, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    try:
        wait_healthy(service)
        # ready: TensorFlow loaded, and the version ran (warming up): CUDA was looked for
        _wait_ready(service.url)
        out, err = predicted.communicate(timeout=300)
    finally:
        service.stop()
        if predicted.poll() is None:
            predicted.kill()
    assert predicted.returncode == 0, err
    served = (tmp_path / "serve.log").read_text(errors="replace")
    assert "now serving model version" in served
    for text in (served, out, err):
        assert not [line for line in text.splitlines() if NATIVE.search(line)], text[-3000:]


def _wait_ready(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while httpx.get(f"{url}/readyz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, httpx.get(f"{url}/readyz", timeout=5).text
        time.sleep(0.2)
