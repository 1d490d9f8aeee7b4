"""Every bad input ends in one line, `error: <code>: <message>`, and exit code 2."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.helpers.cli import one_line_error
from tests.helpers.env import REPO

UNKNOWN = "20260101-000000-abcdef"

# (arguments, the error's code, words its message must hold, modules made unimportable);
# {tiny} is a dataset folder, {empty} a folder without class folders, {image} an X-ray.
CASES = {
    "missing data folder": (["train", "--data", "{missing}"], "usage_error",
                            ["--data", "does not exist"], []),
    "data is a file": (["train", "--data", "{image}"], "usage_error", ["--data", "is a file"], []),
    "no class folders": (["train", "--data", "{empty}"], "invalid_dataset",
                         ["--data", "class folder"], []),
    "image size out of range": (["train", "--data", "{tiny}", "--image-size", "16"],
                                "validation_error", ["--image-size:", "32", "(got 16)"], []),
    "unknown base weights": (["train", "--data", "{tiny}", "--base-weights", "imagnet"],
                             "validation_error", ["--base-weights:", "'none'"], []),
    "two bad options": (["train", "--data", "{tiny}", "--learning-rate", "0",
                         "--validation-fraction", "0.7"], "validation_error",
                        ["--learning-rate:", "; --validation-fraction:"], []),
    "not a number": (["train", "--data", "{tiny}", "--epochs", "many"], "usage_error",
                     ["--epochs"], []),
    "holdout without another source": (["train", "--data", "{tiny}", "--holdout-source",
                                        "tiny"], "validation_error", ["--holdout-source"], []),
    "unknown option": (["train", "--data", "{tiny}", "--epoch", "3"], "usage_error",
                       ["--epoch"], []),
    "imagenet offline": (["train", "--data", "{tiny}"], "weights_unavailable",
                         ["--base-weights none", "--base-weights file", "CXR_BASE_WEIGHTS_FILE"],
                         []),
    "no weights file": (["train", "--data", "{tiny}", "--base-weights", "file"],
                        "weights_unavailable", ["--base-weights none"], []),
    "missing image": (["predict", "{missing}"], "usage_error", ["does not exist"], []),
    "no active model": (["predict", "{image}"], "no_model",
                        ["cxr train --data DIR", "--base-weights none"], []),
    "unknown version": (["predict", "--model", UNKNOWN, "{image}"], "model_not_found",
                        [UNKNOWN], []),
    "nothing to evaluate": (["evaluate", "--data", "{tiny}"], "no_model", ["--model"], []),
    "unknown model": (["evaluate", "--data", "{tiny}", "--model", UNKNOWN], "model_not_found",
                      [UNKNOWN], []),
    "activate unknown": (["models", "activate", UNKNOWN], "model_not_found", [UNKNOWN], []),
    "serve without api extra": (["serve"], "missing_extra", [
        "cxr serve needs the api extra: pip install 'cxr-service[api]'", "uvicorn"],
        ["uvicorn"]),
    "train without worker extra": (["train", "--data", "{tiny}"], "missing_extra", [
        "cxr train needs the worker extra: pip install 'cxr-service[worker]'"], ["sklearn"]),
    "up without either": (["up"], "missing_extra", [
        "cxr up needs the api and worker extras: pip install 'cxr-service[api,worker]'"],
        ["fastapi", "matplotlib"]),
}


@pytest.mark.parametrize(("args", "code", "words", "blocked"), list(CASES.values()),
                         ids=list(CASES))
def test_bad_input_ends_in_one_line(
    args: list[str], code: str, words: list[str], blocked: list[str], cli: CliRunner,
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import keras

    from cxr_cli import app

    def offline(*_: object, **__: object) -> None:
        raise Exception("URL fetch failure: no network")

    # The default base weights, imagenet, come from Keras' cache or the internet: neither here.
    monkeypatch.setattr(keras.utils, "get_file", offline)
    monkeypatch.delenv("CXR_BASE_WEIGHTS_FILE", raising=False)
    for name in blocked:  # an extra that is not installed, without uninstalling it
        monkeypatch.setitem(sys.modules, name, None)
    (tmp_path / "empty" / "notes").mkdir(parents=True)
    folders = {"tiny": tiny_dataset, "empty": tmp_path / "empty",
               "missing": tmp_path / "missing.png",
               "image": next((tiny_dataset / "COVID" / "images").iterdir())}
    result = cli.invoke(app, [arg.format(**folders) for arg in args])
    message = one_line_error(result, code)
    assert all(word in message for word in words), message


def test_the_extras_table_names_a_module_of_every_package_of_each_extra() -> None:
    from cxr_cli.errors import EXTRA_MODULES

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    provided: dict[str, set[str]] = {}
    for module, packages in packages_distributions().items():
        for package in packages:
            provided.setdefault(re.sub(r"[-_.]+", "-", package).lower(), set()).add(module)
    for extra, modules in EXTRA_MODULES.items():
        for requirement in extras[extra]:
            package = re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~; ]", requirement)[0]).lower()
            assert provided.get(package, set()) & set(modules), (extra, package)
