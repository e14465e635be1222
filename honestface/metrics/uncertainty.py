"""Paired comparisons of two methods on the same faces, with a bootstrap confidence interval, and verdicts.

A restoration is "better than the input" on a metric only when the mean per-face gain is positive and its bootstrap
95% interval excludes zero; "worse" when the interval lies entirely below zero; otherwise there is "no measurable
change". Across several training seeds (`verdict_across`) a metric is better (worse) only when it is better (worse)
in every seed.

Our choices (issue 18): the percentile bootstrap of the mean paired difference (Efron & Tibshirani 1993, ch. 13) with
10 000 resamples from a fixed generator (seed 0), so the interval is a deterministic function of the values; the gain
is signed so that positive is better (restored - input for higher-is-better metrics, input - restored otherwise).
Resampling faces treats them as independent; when they come from few people (the quickstart: 2 people x 4 views) the
interval understates the between-person spread, and reports say so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["BETTER", "NO_CHANGE", "WORSE", "PairedComparison", "bootstrap_interval", "compare_paired",
           "verdict_across"]

BETTER, WORSE, NO_CHANGE = "better", "worse", "no measurable change"


@dataclass(frozen=True)
class PairedComparison:
    """One metric, input vs restored, on the same faces (NaN pairs dropped)."""

    input_mean: float
    restored_mean: float
    higher_is_better: bool
    gain: float  # mean per-face gain, positive = restored better
    ci_low: float  # bootstrap interval of `gain`
    ci_high: float
    faces_better: int  # faces whose restored value is strictly better
    faces: int
    verdict: str  # BETTER, WORSE or NO_CHANGE

    def to_dict(self) -> dict:
        return asdict(self)


def bootstrap_interval(values: Sequence[float] | np.ndarray, level: float = 0.95, resamples: int = 10_000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (1-D); deterministic for a given seed."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("bootstrap_interval needs at least one value")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)  # (resamples,)
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return float(lo), float(hi)


def compare_paired(inputs: Sequence[float], restored: Sequence[float], higher_is_better: bool, level: float = 0.95,
                   resamples: int = 10_000, seed: int = 0) -> PairedComparison:
    """Compare per-face values of the input and the restoration (same order, same faces)."""
    if len(inputs) != len(restored):
        raise ValueError(f"{len(inputs)} input values but {len(restored)} restored values; pair them face by face")
    pairs = [(float(a), float(b)) for a, b in zip(inputs, restored) if not (math.isnan(a) or math.isnan(b))]
    if not pairs:
        raise ValueError("no face has a value for both the input and the restoration")
    a, b = np.array(pairs, dtype=np.float64).T
    gains = b - a if higher_is_better else a - b  # (faces,) positive = better
    lo, hi = bootstrap_interval(gains, level, resamples, seed)
    verdict = BETTER if lo > 0 else WORSE if hi < 0 else NO_CHANGE
    return PairedComparison(float(a.mean()), float(b.mean()), bool(higher_is_better), float(gains.mean()), lo, hi,
                            int(np.sum(gains > 0)), len(pairs), verdict)


def verdict_across(verdicts: Sequence[str]) -> str:
    """One verdict from per-seed verdicts: better (worse) only when every seed says so."""
    if not verdicts:
        raise ValueError("verdict_across needs at least one verdict")
    unknown = set(verdicts) - {BETTER, WORSE, NO_CHANGE}
    if unknown:
        raise ValueError(f"unknown verdict {min(unknown)!r}")
    first = verdicts[0]
    return first if first != NO_CHANGE and all(v == first for v in verdicts) else NO_CHANGE
