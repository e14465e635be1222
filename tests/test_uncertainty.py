"""Paired comparisons with bootstrap intervals and verdicts (honestface.metrics.uncertainty)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from honestface.metrics.uncertainty import BETTER, NO_CHANGE, WORSE, bootstrap_interval, compare_paired, verdict_across


def test_bootstrap_interval_is_deterministic_brackets_the_mean_and_narrows_with_more_faces():
    rng = np.random.default_rng(3)
    few, many = rng.normal(1.0, 1.0, 8), rng.normal(1.0, 1.0, 400)
    assert bootstrap_interval(few) == bootstrap_interval(few)  # same values -> same interval, every run
    lo, hi = bootstrap_interval(few)
    assert lo < few.mean() < hi
    lo2, hi2 = bootstrap_interval(many)
    assert hi2 - lo2 < (hi - lo) / 3
    assert lo2 < 1.0 < hi2  # covers the true mean here
    assert bootstrap_interval([2.5, 2.5, 2.5]) == (2.5, 2.5)


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_gain_is_positive_when_the_restoration_is_better_either_direction(higher_is_better):
    lq = np.linspace(10, 20, 8)
    better = lq + 1.0 if higher_is_better else lq - 1.0
    c = compare_paired(lq, better, higher_is_better)
    assert c.gain == pytest.approx(1.0) and c.ci_low == pytest.approx(1.0) and c.verdict == BETTER
    assert c.faces_better == 8 and c.faces == 8
    assert c.input_mean == pytest.approx(15.0) and c.restored_mean == pytest.approx(better.mean())
    worse = compare_paired(lq, lq - 1.0 if higher_is_better else lq + 1.0, higher_is_better)
    assert worse.gain == pytest.approx(-1.0) and worse.verdict == WORSE and worse.faces_better == 0


def test_mixed_differences_are_no_measurable_change_and_nan_pairs_are_dropped():
    lq = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    restored = [1.5, 1.5, 3.5, 3.5, 5.5, float("nan")]  # +0.5, -0.5, +0.5, -0.5, +0.5, dropped
    c = compare_paired(lq, restored, higher_is_better=True)
    assert c.faces == 5 and c.faces_better == 3
    assert c.ci_low < 0 < c.ci_high and c.verdict == NO_CHANGE
    assert math.isclose(c.gain, 0.1)


def test_bad_inputs_are_refused_with_one_line():
    with pytest.raises(ValueError, match="pair them face by face"):
        compare_paired([1.0, 2.0], [1.0], True)
    with pytest.raises(ValueError, match="no face has a value"):
        compare_paired([float("nan")], [1.0], True)
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval([1.0], level=1.5)


def test_a_claim_across_seeds_needs_every_seed():
    assert verdict_across([BETTER, BETTER, BETTER]) == BETTER
    assert verdict_across([BETTER, NO_CHANGE, BETTER]) == NO_CHANGE
    assert verdict_across([WORSE, WORSE]) == WORSE
    assert verdict_across([BETTER, WORSE]) == NO_CHANGE
    with pytest.raises(ValueError, match="unknown verdict"):
        verdict_across(["improved"])
