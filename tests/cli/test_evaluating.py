"""`cxr evaluate`'s summary: all answers and the reliable ones side by side, overall and for
each class, and what the chest-radiograph check would have done, in plain words."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shared.config import Settings
from shared.manifest import ClassRates, EvaluatedDataset, GateCount, SplitMetrics
from shared.ml.reliability import ReliableClass, ReliableSubset
from tests.helpers.versions import Trained, external_report


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def test_the_summary_sets_the_reliable_answers_beside_all_of_them(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cxr_cli import app, runtime

    models = tmp_path / "models"  # the suite's version, in a registry of this test's own
    shutil.copytree(trained.settings.models_dir, models)
    monkeypatch.setattr(runtime, "get_settings", lambda: Settings(
        models_dir=models, state_dir=tmp_path / "state"))
    summary = CliRunner().invoke(app, ["evaluate", "--model", trained.version,
                                       "--data", str(trained.dataset)])
    assert summary.exit_code == 0, summary.output
    lines = summary.stdout.splitlines()
    report = json.loads(Path(lines[-1].split()[3]).read_text())
    metrics, subset = report["metrics"], report["reliability"]
    low, high = metrics["balanced_accuracy_ci"]
    kept = round(subset["coverage"] * subset["images"])
    assert lines[1] == (f"all answers: balanced accuracy {metrics['balanced_accuracy']:.3f} "
                        f"(95% CI {low:.3f}-{high:.3f}), accuracy {metrics['accuracy']:.3f}")
    assert lines[2] == (f"answers marked reliable: {kept} of {subset['images']} "
                        f"({subset['coverage']:.0%}, the coverage); on those alone, balanced "
                        f"accuracy {_rate(subset['balanced_accuracy'])}, accuracy "
                        f"{_rate(subset['accuracy'])}")
    gate = report["chest_xray_gate"]
    assert lines[3] == (
        f"all {gate['images']} images looked like chest radiographs to this version (the "
        "service would refuse none)" if gate["refused"] == 0 else
        f"{gate['refused']} of {gate['images']} images did not look like chest radiographs "
        "to this version and would be refused by the service; they are scored here all the "
        "same")
    # per class: the recall of all answers and of the reliable ones, and the coverage; the
    # version's own test split has the same figures in its manifest
    record = trained.registry.manifest(trained.version).reliability
    assert record is not None and record.test is not None
    tested = record.test.per_class
    assert sum(c.images for c in tested.values()) == record.test.images > 0
    assert sum(c.reliable for c in tested.values()) == round(
        record.test.coverage * record.test.images)
    per_class = subset["per_class"]
    assert list(per_class) == ["COVID", "Normal", "Viral Pneumonia"]
    assert sum(c["images"] for c in per_class.values()) == metrics["images"] == 36
    assert sum(c["reliable"] for c in per_class.values()) == kept
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("Class"))
    assert lines[header].split() == ["Class", "Images", "Recall,", "all", "95%", "CI",
                                     "Reliable", "Recall,", "reliable"]
    for label, row in per_class.items():
        rates = metrics["per_class"][label]
        assert row["recall"] == rates["sensitivity"]
        shown = next(line for line in lines[header:] if line.lstrip().startswith(label))
        low, high = rates["sensitivity_ci"]
        assert shown.split()[-6:] == [
            str(row["images"]), _rate(row["recall"]), f"{low:.3f}-{high:.3f}",
            str(row["reliable"]), f"({row['reliable'] / row['images']:.0%})",
            _rate(row["reliable_recall"])]


def test_refusals_and_coverage_are_said_plainly(capsys: pytest.CaptureFixture[str]) -> None:
    from cxr_cli.evaluating import print_summary

    covid = ClassRates(support=317, sensitivity=0.06, sensitivity_ci=[0.04, 0.09])
    report = external_report("v1", "covid19-image-dataset").model_copy(update={
        "dataset": EvaluatedDataset(name="covid19-image-dataset", counts={"COVID": 317}),
        "metrics": SplitMetrics(images=317, accuracy=0.06, balanced_accuracy=0.06,
                                per_class={"COVID": covid}),
        "sensitivity": {"COVID": 0.06},
        "chest_xray_gate": GateCount(refused=2, images=317),
        "reliability": ReliableSubset(
            images=317, coverage=273 / 317, accuracy=0.458, balanced_accuracy=0.458,
            per_class={"COVID": ReliableClass(images=317, reliable=273, recall=0.06,
                                              reliable_recall=0.055)})})
    print_summary(report, "/models/evaluations/v1/x.json")
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == [
        "version v1 on covid19-image-dataset: 317 images (COVID 317)",
        "all answers: balanced accuracy 0.060, accuracy 0.060",
        "answers marked reliable: 273 of 317 (86%, the coverage); on those alone, balanced "
        "accuracy 0.458, accuracy 0.458",
        "2 of 317 images did not look like chest radiographs to this version and would be "
        "refused by the service; they are scored here all the same"]
    row = next(line for line in lines if line.startswith("COVID"))
    assert row.split() == ["COVID", "317", "0.060", "0.040-0.090", "273", "(86%)", "0.055"]
