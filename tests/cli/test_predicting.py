"""`cxr predict`: one table for one image or many (or a JSON list), the version chosen with
--model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shared.config import Settings
from shared.registry.local import LocalRegistry
from tests.helpers.cli import one_line_error
from tests.helpers.env import sample_files
from tests.helpers.versions import publish_random


@pytest.fixture
def active(cli: CliRunner, settings: Settings) -> CliRunner:
    """`cxr` with a random version active in the test's registry."""
    publish_random(LocalRegistry(settings.models_dir), seed=3, activate=True)
    return cli


def test_predict_a_folder_answers_each_image_and_one_bad_file_fails_alone(
    active: CliRunner, radiography_root: Path, tmp_path: Path
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

    table = active.invoke(app, ["predict", str(folder)])
    assert table.exit_code == 1, table.output
    rows = [line for line in table.stdout.splitlines() if str(folder) in line]
    assert [line.split()[0] for line in rows] == [str(folder / n) for n in names]
    assert sum("error: invalid_image" in line for line in rows) == 1
    assert all(re.search(r"\b(a|b|c)\s+\d+\.\d%", line) for line in rows
               if "notes.png" not in line)
    assert table.stderr.strip().splitlines()[-1] == "1 of 3 images failed"

    listed = active.invoke(app, ["predict", "--json", str(folder)])
    assert listed.exit_code == 1
    entries = json.loads(listed.stdout)
    assert [e["file"] for e in entries] == [str(folder / n) for n in names]
    failed = [e for e in entries if "error" in e]
    assert [(e["file"], e["error"]["code"]) for e in failed] == [
        (str(folder / "notes.png"), "invalid_image")]
    assert all(set(e["prediction"]["probabilities"]) == {"a", "b", "c"}
               for e in entries if "prediction" in e)


def test_one_file_prints_the_same_table_and_json_is_always_a_list(
    active: CliRunner, settings: Settings, radiography_root: Path, tmp_path: Path
) -> None:
    from cxr_cli import app

    image = sample_files(radiography_root, 1)["COVID"][0]
    shown = active.invoke(app, ["predict", str(image)])
    assert shown.exit_code == 0, shown.output
    header, row = shown.stdout.splitlines()
    assert header.split() == ["File", "Label", "Probability", "Reliable"]
    assert re.fullmatch(rf"{re.escape(str(image))}\s+(a|b|c)\s+\d+\.\d%\s+yes", row.strip())
    assert "{" not in shown.stdout  # no JSON, no 16-digit floats

    listed = active.invoke(app, ["predict", "--json", str(image)])
    assert listed.exit_code == 0, listed.output
    (entry,) = json.loads(listed.stdout)
    assert entry["file"] == str(image)
    answer = entry["prediction"]
    assert set(answer["probabilities"]) == {"a", "b", "c"}
    assert answer["label"] == max(answer["probabilities"], key=answer["probabilities"].get)
    assert f"{answer['probabilities'][answer['label']]:.1%}" in row

    bad = tmp_path / "notes.png"
    bad.write_bytes(b"hello")
    one_line_error(active.invoke(app, ["predict", str(bad)]), "invalid_image")


def test_the_version_is_chosen_with_model_as_in_every_command(
    active: CliRunner, settings: Settings, radiography_root: Path
) -> None:
    from cxr_cli import app

    other = publish_random(LocalRegistry(settings.models_dir), seed=4)  # not the active one
    image = str(sample_files(radiography_root, 1)["COVID"][0])
    chosen = active.invoke(app, ["predict", "--model", other, "--json", image])
    assert chosen.exit_code == 0, chosen.output
    assert json.loads(chosen.stdout)[0]["prediction"]["model_version"] == other
    # the old spelling still works, and says it is deprecated
    old = active.invoke(app, ["predict", "--version", other, "--json", image])
    assert old.exit_code == 0, old.output
    assert json.loads(old.stdout)[0]["prediction"]["model_version"] == other
    assert "deprecated: use --model" in old.stderr
    both = active.invoke(app, ["predict", "--model", other, "--version", "active", image])
    assert "--model" in one_line_error(both, "usage_error")
