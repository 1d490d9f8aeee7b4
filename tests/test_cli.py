"""The `cxr` command: train and publish locally without the queue, then predict."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shared.config import Settings
from shared.registry.local import LocalRegistry
from tests.helpers.env import PROCESS_ENV, REPO, sample_files
from tests.helpers.versions import publish_random


def _cxr(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cxr_cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.trains
def test_train_predict_and_evaluate_from_the_command_line(
    tiny_dataset: Path, image_dataset_root: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import cxr_cli

    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env.update({"CXR_MODELS_DIR": str(tmp_path / "models"),
                "CXR_STATE_DIR": str(tmp_path / "state"), "TF_CPP_MIN_LOG_LEVEL": "2",
                **PROCESS_ENV})
    # `cxr train` as a user runs it, a process of its own; the other commands in this one
    # (each process imports TensorFlow: seconds of the suite), on the same folders.
    monkeypatch.setattr(cxr_cli, "get_settings", lambda: Settings(
        models_dir=tmp_path / "models", state_dir=tmp_path / "state", export_onnx=False))
    runner = CliRunner()
    no_model = runner.invoke(cxr_cli.app, ["predict", str(tmp_path / "x.png")])
    assert no_model.exit_code == 2
    assert "no_model" in no_model.stderr and no_model.exception is not None
    assert isinstance(no_model.exception, SystemExit)  # a one-line error, not a traceback

    trained = _cxr("train", "--data", str(tiny_dataset), "--epochs", "2", "--image-size", "32",
                   "--base-weights", "none", "--fine-tune-epochs", "1", "--batch-size", "8",
                   "--seed", "5", env=env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "epoch 2/2 (full)" in trained.stdout and "activated" in trained.stdout
    version = trained.stdout.strip().splitlines()[-1].split()[3].rstrip(",")
    assert (tmp_path / "models" / version / "manifest.json").is_file()

    image = next((tiny_dataset / "Normal" / "images").iterdir())
    predicted = runner.invoke(cxr_cli.app, ["predict", str(image)])
    assert predicted.exit_code == 0, predicted.output
    answer = json.loads(predicted.stdout)
    assert answer["model_version"] == version
    assert set(answer["probabilities"]) == {"COVID", "Normal", "Viral Pneumonia"}
    assert answer["label"] == max(answer["probabilities"], key=answer["probabilities"].get)

    evaluated = runner.invoke(cxr_cli.app, ["evaluate", "--data", str(image_dataset_root)])
    assert evaluated.exit_code == 0, evaluated.output
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


@pytest.fixture
def cli(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """`cxr` in this process (a subprocess would import TensorFlow again), with a random
    version active in the test's settings."""
    import cxr_cli

    publish_random(LocalRegistry(settings.models_dir), seed=3, activate=True)
    monkeypatch.setattr(cxr_cli, "get_settings", lambda: settings)
    return CliRunner()


def test_predict_a_folder_answers_each_image_and_one_bad_file_fails_alone(
    cli: CliRunner, radiography_root: Path, tmp_path: Path
) -> None:
    from cxr_cli import app

    folder = tmp_path / "films"
    folder.mkdir()
    names = []
    for label, paths in sample_files(radiography_root, 1).items():
        if label in ("COVID", "Normal"):
            (folder / paths[0].name).write_bytes(paths[0].read_bytes())
            names.append(paths[0].name)
    (folder / "notes.png").write_bytes(b"hello")
    (folder / "readme.txt").write_text("not an image: skipped")
    names = sorted([*names, "notes.png"])

    table = cli.invoke(app, ["predict", str(folder)])
    assert table.exit_code == 1, table.output
    rows = [line for line in table.stdout.splitlines() if str(folder) in line]
    assert [line.split()[0] for line in rows] == [str(folder / n) for n in names]
    assert sum("error: invalid_image" in line for line in rows) == 1
    assert all(re.search(r"\b(a|b|c)\s+\d+\.\d%", line) for line in rows
               if "notes.png" not in line)
    assert table.stderr.strip().splitlines()[-1] == "1 of 3 images failed"

    listed = cli.invoke(app, ["predict", "--json", str(folder)])
    assert listed.exit_code == 1
    entries = json.loads(listed.stdout)
    assert [e["file"] for e in entries] == [str(folder / n) for n in names]
    failed = [e for e in entries if "error" in e]
    assert [(e["file"], e["error"]["code"]) for e in failed] == [
        (str(folder / "notes.png"), "invalid_image")]
    assert all(set(e["prediction"]["probabilities"]) == {"a", "b", "c"}
               for e in entries if "prediction" in e)


def test_predict_one_file_prints_its_json_as_before(
    cli: CliRunner, radiography_root: Path, tmp_path: Path
) -> None:
    from cxr_cli import app

    image = sample_files(radiography_root, 1)["COVID"][0]
    for args in (["predict", str(image)], ["predict", "--json", str(image)]):
        result = cli.invoke(app, args)
        assert result.exit_code == 0, result.output
        answer = json.loads(result.stdout)
        assert set(answer["probabilities"]) == {"a", "b", "c"}
        assert answer["label"] == max(answer["probabilities"], key=answer["probabilities"].get)
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"hello")
    refused = cli.invoke(app, ["predict", str(bad)])
    assert refused.exit_code == 2 and refused.stdout == ""
    # the last line: a handler an earlier in-process command left on a closed stream may
    # complain before it
    assert refused.stderr.strip().splitlines()[-1].startswith("error: invalid_image:")


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    from cxr_cli import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"cxr-service {version('cxr-service')}"
