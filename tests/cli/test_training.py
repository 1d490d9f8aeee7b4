"""`cxr train` from the command line, then what a user does with the version: list it,
predict, evaluate on another hospital's images."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from shared.config import Settings
from shared.errors import JobCancelled
from shared.monitoring.prediction_log_sqlite import SqlitePredictionLog
from shared.training_params import TrainingParams
from tests.helpers.cli import one_line_error, run_cxr
from tests.helpers.env import PROCESS_ENV

TRAIN = ["--epochs", "2", "--image-size", "32", "--base-weights", "none",
         "--fine-tune-epochs", "1", "--batch-size", "8", "--seed", "5"]


@pytest.mark.trains
def test_train_then_list_predict_and_evaluate_from_the_command_line(
    tiny_dataset: Path, image_dataset_root: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cxr_cli import app, runtime

    # TensorFlow's own start-up lines are what this checks: the variable is the command's
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CXR_") and k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update({"CXR_MODELS_DIR": str(tmp_path / "models"),
                "CXR_STATE_DIR": str(tmp_path / "state"), **PROCESS_ENV})
    # `cxr train` as a user runs it, a process of its own; the other commands in this one
    # (each process imports TensorFlow: seconds of the suite), on the same folders.
    monkeypatch.setattr(runtime, "get_settings", lambda: Settings(
        models_dir=tmp_path / "models", state_dir=tmp_path / "state", export_onnx=False))
    runner = CliRunner()

    trained = run_cxr("train", "--data", str(tiny_dataset), *TRAIN, env=env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    outcome = trained.stdout.strip().splitlines()[-1]
    version = outcome.split()[3]
    # the first version: activated, in words that cannot be read as "not activated"
    assert outcome.startswith(f"published model version {version} and activated it: "), outcome
    assert (tmp_path / "models" / version / "manifest.json").is_file()
    # Piped: a line an epoch and one a step after training (no ONNX export here), and
    # nothing else: no TensorFlow start-up lines (cuda, absl, oneDNN), no warnings.
    progress = trained.stderr.splitlines()
    assert [line.split(":")[0] for line in progress] == [
        "epoch 1/2 (full)", "epoch 2/2 (full)", "evaluation", "calibration", "saving",
        "publishing"], trained.stderr[-3000:]
    took = r"(\d+ min )?[\d.]+ s"  # an epoch's own time, then the training's so far
    assert all(re.search(rf"loss [\d.]+, accuracy [\d.]+, val_loss [\d.]+(, .*)?, "
                         rf"{took} this epoch, {took} in all$", line)
               for line in progress[:2]), progress[:2]
    assert re.fullmatch(r"evaluation: 36/36 in [\d.]+ s", progress[2])

    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.stdout.splitlines() if line.startswith(version))
    assert row.split()[3] == "tiny" and row.rstrip().endswith("*")
    as_json = json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)
    assert as_json["active"] == version and [v["version"] for v in as_json["versions"]] == [
        version]

    image = next((tiny_dataset / "Normal" / "images").iterdir())
    predicted = runner.invoke(app, ["predict", "--json", str(image)])
    assert predicted.exit_code == 0, predicted.output
    answer = json.loads(predicted.stdout)[0]["prediction"]
    assert answer["model_version"] == version
    assert set(answer["probabilities"]) == {"COVID", "Normal", "Viral Pneumonia"}
    assert answer["label"] == max(answer["probabilities"], key=answer["probabilities"].get)
    # logged like the API's answers, for the reading room to label
    record = SqlitePredictionLog(tmp_path / "state" / "predictions.sqlite", 1).get(
        answer["prediction_id"])
    assert (record.source, record.version, record.label) == ("cli", version, answer["label"])
    assert record.image_sha256 == hashlib.sha256(image.read_bytes()).hexdigest()

    # every 10th film of the other hospital's set (all its formats and classes): the whole
    # set twice would be most of this test's time
    other = tmp_path / image_dataset_root.name
    for folder in sorted(p for p in image_dataset_root.iterdir() if p.is_dir()):
        (other / folder.name).mkdir(parents=True)
        for film in sorted(folder.iterdir())[::10]:
            (other / folder.name / film.name).symlink_to(film)
    summary = runner.invoke(app, ["evaluate", "--data", str(other)])
    assert summary.exit_code == 0, summary.output
    evaluated = runner.invoke(app, ["evaluate", "--data", str(other), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout)
    assert report["kind"] == "external" and report["version"] == version
    assert report["dataset"]["class_mapping"] == {
        "COVID": "COVID", "NORMAL": "Normal", "VIRAL_PNEUMONIA": "Viral Pneumonia"}
    metrics = report["metrics"]
    assert metrics["images"] == sum(report["dataset"]["counts"].values()) > 0
    low, high = metrics["balanced_accuracy_ci"]
    assert low <= metrics["balanced_accuracy"] <= high
    stored = list((tmp_path / "models" / "evaluations" / version).glob("*.json"))
    assert len(stored) == 2 and report in [json.loads(p.read_text()) for p in stored]
    manifest = json.loads((tmp_path / "models" / version / "manifest.json").read_text())
    assert "external" not in json.dumps(manifest["metrics"])  # kept apart from the test split

    lines = summary.stdout.splitlines()
    name = image_dataset_root.name
    assert lines[0].startswith(f"version {version} on {name}: {metrics['images']} images")
    assert lines[1] == (f"all answers: balanced accuracy {metrics['balanced_accuracy']:.3f} "
                        f"(95% CI {low:.3f}-{high:.3f}), accuracy {metrics['accuracy']:.3f}")
    assert lines[2].startswith("answers marked reliable: ")
    assert "chest radiograph" in lines[3]  # tests/cli/test_evaluating.py reads the rest
    for label in ("COVID", "Normal", "Viral Pneumonia"):
        rates = metrics["per_class"][label]
        recall = next(line for line in lines if line.startswith(label))
        assert recall.split()[-6:-4] == [str(rates["support"]), f"{rates['sensitivity']:.3f}"]
    assert lines[-1].startswith("report stored as ")
    assert re.fullmatch(rf"evaluation on {name}: (\d+)/\1 in [\d.]+ s",
                        summary.stderr.strip())
    # the same version compared with itself ("active") on the same films: no difference
    compared = runner.invoke(app, ["evaluate", "--data", str(tiny_dataset), "--compare",
                                   "active"])
    assert compared.exit_code == 0, compared.output
    assert (f"{version} against {version} on the same 36 images" in compared.stdout
            and "difference +0.000 (95% paired interval +0.000 to +0.000)" in compared.stdout)

    unknown = tmp_path / "unknown"
    for label in ("COVID", "Tuberculosis"):
        (unknown / label).mkdir(parents=True)
        (unknown / label / image.name).write_bytes(image.read_bytes())
    refused = runner.invoke(app, ["evaluate", "--data", str(unknown)])
    assert "Tuberculosis" in one_line_error(refused, "invalid_dataset")


def test_every_training_parameter_is_an_option_of_train(
    cli: CliRunner, tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import worker.runner.retrain
    from cxr_cli import app
    from cxr_cli.options import option_name

    command = typer.main.get_command(app).commands["train"]
    options = {name: param for param in command.params for name in param.opts}
    assert {option_name(field) for field in TrainingParams.model_fields} <= set(options)
    # with the schema's description and bounds as its help
    assert "Square input size in pixels. Range: 32 <= x <= 512." in options["--image-size"].help
    assert "One of: imagenet, file, none." in options["--base-weights"].help

    other, outside = tmp_path / "other", tmp_path / "outside"
    for label in ("COVID", "Normal", "Viral Pneumonia"):
        shutil.copytree(tiny_dataset / label, other / label)
    shutil.copytree(tiny_dataset / "COVID" / "images", outside / "COVID")
    given = {"dataset": "tiny", "datasets": ["other"], "external_datasets": ["outside"],
             "holdout_source": "other", "group_by_source": True, "epochs": 3,
             "batch_size": 4, "image_size": 64, "learning_rate": 0.01, "base_weights": "none",
             "seed": 9, "fine_tune": False, "fine_tune_epochs": 2,
             "fine_tune_learning_rate": 0.001, "validation_fraction": 0.2,
             "test_fraction": 0.25, "dropout": 0.1, "groups_csv": "p.csv",
             "group_column": "pid", "equalize": "clahe", "crop_border": 0.1,
             "clahe_clip_limit": 0.02, "intensity_augmentation": True, "class_weights": False,
             "early_stopping_patience": 0, "head_cache_views": 2, "lr_schedule": "cosine",
             "warmup_fraction": 0.1, "time_budget_s": 120, "confidence_coverage": 0.9,
             "gate_min_images": 0, "activate": "never", "base_version": "20260101-000000-abcdef",
             "replay_fraction": 0.3}
    # every field set away from its default, so each one is shown to reach the request
    assert set(given) == set(TrainingParams.model_fields)
    assert all(value != TrainingParams.model_fields[field].get_default(
        call_default_factory=True) for field, value in given.items() if field != "dataset")
    args = ["--data", str(tiny_dataset), "--data", str(other), "--external-data", str(outside)]
    for field, value in given.items():
        if field in ("dataset", "datasets", "external_datasets"):
            continue
        if isinstance(value, bool):
            args.append(option_name(field) if value else f"--no-{option_name(field)[2:]}")
        else:
            args += [option_name(field), str(value)]
    asked = {}

    def train_and_publish(dataset: object, params: TrainingParams, context: object,
                          external: dict[str, object]) -> str:
        asked.update(params=params, external=external)
        raise JobCancelled("stopped by the test")

    monkeypatch.setattr(worker.runner.retrain, "train_and_publish", train_and_publish)
    one_line_error(cli.invoke(app, ["train", *args]), "job_cancelled")
    assert asked["params"] == TrainingParams.model_validate(given)
    assert list(asked["external"]) == ["outside"]


def test_the_outcome_says_whether_the_version_was_activated_in_so_many_words() -> None:
    from cxr_cli.training import outcome_line
    from shared.manifest import Promotion

    decided = {"mode": "if_better", "metric": "balanced_accuracy", "margin": 0.0}
    kept = Promotion(**decided, activated=False, reason="balanced_accuracy 0.5 is worse than "
                     "the active version's 0.7 by more than 0.0; kept as a candidate")
    assert outcome_line("v2", kept) == (
        "published model version v2; not activated: balanced_accuracy 0.5 is worse than the "
        "active version's 0.7 by more than 0.0; kept as a candidate")
    first = Promotion(**decided, activated=True, reason="it is the first version")
    assert outcome_line("v1", first) == (
        "published model version v1 and activated it: it is the first version")
