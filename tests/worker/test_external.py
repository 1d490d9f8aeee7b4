"""External evaluation: classes matched by name across spellings, unknown ones refused."""

from __future__ import annotations

import pytest

from shared.errors import InvalidDataset
from worker.external import match_classes

MODEL = ["COVID", "Normal", "Viral Pneumonia"]


def test_names_match_across_case_and_separators() -> None:
    assert match_classes(["COVID", "NORMAL", "VIRAL_PNEUMONIA"], MODEL) == {
        "COVID": 0, "NORMAL": 1, "VIRAL_PNEUMONIA": 2}
    assert match_classes(["viral-pneumonia"], MODEL) == {"viral-pneumonia": 2}


def test_an_unknown_class_is_an_error_not_a_silent_zero() -> None:
    with pytest.raises(InvalidDataset, match="Tuberculosis"):
        match_classes(["COVID", "Tuberculosis"], MODEL)
