"""Per-epoch checkpoints, so a job whose worker died resumes instead of starting over.

A checkpoint is the model's weights plus where training stood (phase, epochs done, history).
It belongs to one request: a checkpoint written for other parameters is ignored. Optimizer
moments and early-stopping state are not kept; a resumed phase restarts them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"
WEIGHTS_FILE = "weights.weights.h5"


@dataclass
class Progress:
    """Where training stands after the last completed epoch."""

    key: str
    phase: int = 0
    phase_epochs_done: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)
    phases_done: list[dict[str, Any]] = field(default_factory=list)


def request_key(params: dict[str, Any], dataset_fingerprint: str) -> str:
    """Identifies what was being trained; a checkpoint only resumes the same request."""
    payload = json.dumps({"params": params, "data": dataset_fingerprint}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def load(folder: Path, key: str) -> Progress | None:
    """The saved progress for this request, or None."""
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if state.get("key") != key or not (folder / WEIGHTS_FILE).is_file():
        return None
    return Progress(**state)


def save(folder: Path, model: Any, progress: Progress) -> None:
    """Weights first, then the state that points at them: each replaced atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp_weights = folder / f"tmp-{WEIGHTS_FILE}"
    model.save_weights(tmp_weights)
    os.replace(tmp_weights, folder / WEIGHTS_FILE)
    tmp_state = folder / f"{STATE_FILE}.tmp"
    tmp_state.write_text(json.dumps(asdict(progress)))
    os.replace(tmp_state, folder / STATE_FILE)


def restore_weights(folder: Path, model: Any) -> None:
    model.load_weights(folder / WEIGHTS_FILE)


def clear(folder: Path | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def sweep(root: Path, is_over: Callable[[str], bool]) -> list[str]:
    """Remove the checkpoints under ``root`` (one folder per job id) of jobs that are over:
    a worker killed outright leaves one behind for a job later declared lost."""
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    over = [folder for folder in folders if is_over(folder.name)]
    for folder in over:
        clear(folder)
    return [folder.name for folder in over]


def epoch_callback(folder: Path | None, progress: Progress, model: Any) -> Any:
    """A Keras callback that records each epoch in ``progress`` and, given a folder,
    checkpoints there."""
    import keras

    class Checkpoint(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            for key, value in (logs or {}).items():
                progress.history.setdefault(key, []).append(float(value))
            progress.phase_epochs_done += 1
            if folder is not None:
                save(folder, model, progress)  # the whole classifier, not only what is fitted

    return Checkpoint()
