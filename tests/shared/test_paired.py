"""Two versions on the same images: the paired difference and McNemar's test, checked
against a computation by hand."""

from __future__ import annotations

import numpy as np
import pytest

from shared.paired import paired_comparison

# Three of each class; the first version misses one pneumonia, the second one COVID, both
# an other COVID, and one normal each.
LABELS = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
FIRST = np.array([0, 0, 0, 1, 1, 1, 2, 2, 0])
SECOND = np.array([0, 1, 2, 1, 0, 1, 2, 2, 2])


def test_the_paired_comparison_matches_a_hand_computation() -> None:
    result = paired_comparison(LABELS, FIRST, SECOND, ("new", "old"))
    # first: recall 3/3, 3/3, 2/3; second: 1/3, 2/3, 3/3
    assert result.first_balanced_accuracy == pytest.approx(8 / 9)
    assert result.second_balanced_accuracy == pytest.approx(6 / 9)
    assert result.difference == pytest.approx(2 / 9)
    # right only by the first: images 1, 2, 4; only by the second: image 8
    assert (result.only_first_right, result.only_second_right) == (3, 1)
    # exact McNemar: two-sided binomial on 3 of 4 discordant pairs, 2 * (4 + 1) / 16
    assert result.mcnemar_p == pytest.approx(10 / 16)
    assert result.images == 9 and (result.first, result.second) == ("new", "old")
    assert result.difference_ci is not None
    low, high = result.difference_ci
    assert low < 2 / 9 < high


def test_the_interval_resamples_both_versions_on_the_same_images() -> None:
    # The same predictions: every resample's difference is 0, so the interval is [0, 0],
    # where scoring each version on resamples of its own would spread it.
    same = paired_comparison(LABELS, FIRST, FIRST.copy(), ("a", "b"))
    assert same.difference_ci == [0.0, 0.0] and same.mcnemar_p is None
    # One version right everywhere the other is wrong, on 300 images: the interval lies
    # wholly above zero.
    labels = np.tile([0, 1, 2], 100)
    worse = np.where(np.arange(300) % 4 == 0, (labels + 1) % 3, labels)
    better = paired_comparison(labels, labels, worse, ("a", "b"), seed=3)
    assert better.difference_ci is not None and better.difference_ci[0] > 0
    assert better.mcnemar_p is not None and better.mcnemar_p < 1e-6


def test_no_images_give_no_figures() -> None:
    empty = paired_comparison(np.array([]), np.array([]), np.array([]), ("a", "b"))
    assert empty.images == 0 and empty.difference is None and empty.difference_ci is None
