"""The `cxr` command: train and publish locally without the queue, then predict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.env import PROCESS_ENV, REPO


def _cxr(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cxr_cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.trains
def test_train_predict_and_evaluate_from_the_command_line(
    tiny_dataset: Path, image_dataset_root: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env.update({"CXR_MODELS_DIR": str(tmp_path / "models"),
                "CXR_STATE_DIR": str(tmp_path / "state"), "TF_CPP_MIN_LOG_LEVEL": "2",
                **PROCESS_ENV})
    no_model = _cxr("predict", str(tmp_path / "x.png"), env=env)
    assert no_model.returncode == 2
    assert "no_model" in no_model.stderr and "Traceback" not in no_model.stderr

    trained = _cxr("train", "--data", str(tiny_dataset), "--epochs", "2", "--image-size", "32",
                   "--base-weights", "none", "--fine-tune-epochs", "1", "--batch-size", "8",
                   "--seed", "5", env=env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "epoch 2/2 (full)" in trained.stdout and "activated" in trained.stdout
    version = trained.stdout.strip().splitlines()[-1].split()[3].rstrip(",")
    assert (tmp_path / "models" / version / "manifest.json").is_file()

    image = next((tiny_dataset / "Normal" / "images").iterdir())
    predicted = _cxr("predict", str(image), env=env)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    answer = json.loads(predicted.stdout)
    assert answer["model_version"] == version
    assert set(answer["probabilities"]) == {"COVID", "Normal", "Viral Pneumonia"}
    assert answer["label"] == max(answer["probabilities"], key=answer["probabilities"].get)

    evaluated = _cxr("evaluate", "--data", str(image_dataset_root), env=env)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads(evaluated.stdout)
    assert report["kind"] == "external" and report["version"] == version
    assert report["dataset"]["class_mapping"] == {
        "COVID": "COVID", "NORMAL": "Normal", "VIRAL_PNEUMONIA": "Viral Pneumonia"}
    assert report["metrics"]["images"] == sum(report["dataset"]["counts"].values()) > 0
    stored = list((tmp_path / "models" / "evaluations" / version).glob("*.json"))
    assert [json.loads(p.read_text()) for p in stored] == [report]
    manifest = json.loads((tmp_path / "models" / version / "manifest.json").read_text())
    assert "external" not in json.dumps(manifest["metrics"])  # kept apart from the test split

    unknown = tmp_path / "unknown"
    for label in ("COVID", "Tuberculosis"):
        (unknown / label).mkdir(parents=True)
        (unknown / label / image.name).write_bytes(image.read_bytes())
    refused = _cxr("evaluate", "--data", str(unknown), env=env)
    assert refused.returncode == 2 and "Tuberculosis" in refused.stderr


def test_a_new_key_is_printed_once_with_the_settings_entry_that_admits_it() -> None:
    from api.auth import match_key
    from shared.config import Settings

    made = _cxr("key", "--name", "ops", "--role", "reader", env=dict(os.environ))
    assert made.returncode == 0, made.stderr
    key = made.stdout.split("shown only now): ")[1].split()[0]
    entry = made.stdout.split("CXR_API_KEYS='")[1].split("'")[0]
    settings = Settings(api_keys=json.loads(entry))
    assert key not in entry
    found = match_key(key, settings.api_keys)
    assert found is not None and (found.name, found.role) == ("ops", "reader")
    assert _cxr("key", "--role", "root", env=dict(os.environ)).returncode != 0
