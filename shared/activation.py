"""Whether serving a version needs an explicit confirmation, and the words that ask for it.

A version whose test balanced accuracy interval includes chance (or that has no interval)
is not shown to do better than guessing: activating it by hand is allowed, but only when
the request says so (``force``), and the caller records that it did.
"""

from __future__ import annotations

from shared.errors import ConfirmationRequired
from shared.manifest import Manifest
from shared.ml.reliability import ReliabilityRecord


def chance_reason(record: ReliabilityRecord) -> str | None:
    """Why a version is no better than chance on its test split; None when it is."""
    if record.better_than_chance:
        return None
    interval = record.balanced_accuracy_ci
    if interval is None:
        return "no test balanced accuracy to compare with chance"
    return (f"the test balanced accuracy interval [{interval[0]:.3f}, {interval[1]:.3f}] "
            f"includes chance ({record.chance:.3f})")


def activation_warning(manifest: Manifest) -> str | None:
    """Why serving this version needs an explicit confirmation, in plain words; None for a
    version proven better than chance."""
    record = manifest.effective_reliability
    if record is None:  # published before intervals were recorded, or without a test split
        return "it has no test balanced accuracy interval: nothing shows it beats chance"
    return chance_reason(record)


def _what_serving_means(manifest: Manifest) -> str:
    # A version without a record has no rule to mark its answers: they read as findings.
    if manifest.effective_reliability is None:
        return "every API process would answer with it, its answers unmarked"
    return ("every API process would answer with it, and every answer would be marked "
            "unreliable (version_not_better_than_chance)")


def check_activation(manifest: Manifest, force: bool) -> str | None:
    """Refuse (``ConfirmationRequired``) to activate a version that is not shown better than
    chance unless ``force``; the warning when forced (for the caller to record), else None."""
    warning = activation_warning(manifest)
    if warning is None or force:
        return warning
    version = manifest.version
    raise ConfirmationRequired(
        f"version {version} is not shown better than chance ({warning}); serving it means "
        f"{_what_serving_means(manifest)}. To serve it anyway, confirm: "
        f"POST /models/{version}/activate?force=true, or `cxr models activate {version} "
        "--force`")
