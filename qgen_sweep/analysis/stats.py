"""Paired statistics over the rows of analysis/paired.sql: bootstrap CI and Wilcoxon p-value."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

N_RESAMPLES = 2000  # bootstrap resamples per CI (the report promises at least 2,000)
SEED = 0  # fixed, so a report is reproducible to the last digit
LEVEL = 0.95
_CHUNK = 500  # resamples drawn at a time: bounds memory at 500 x n floats


def bootstrap_ci(
    diffs: Sequence[float], n_resamples: int = N_RESAMPLES, seed: int = SEED, level: float = LEVEL
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of `diffs` (resampling pairs).

    Seeded (numpy PCG64) so the same rows give the same interval; NaN bounds for no rows.
    """
    values = np.asarray(diffs, dtype=np.float64)
    if values.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, _CHUNK):
        stop = min(start + _CHUNK, n_resamples)
        picks = rng.integers(0, values.size, size=(stop - start, values.size))
        means[start:stop] = values[picks].mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def wilcoxon_p(diffs: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value (scipy.stats.wilcoxon, its default method).

    NaN when it is undefined: no pairs, or every difference exactly zero.
    """
    from scipy.stats import wilcoxon  # scipy.stats takes ~1 s to import: only when needed

    values = np.asarray(diffs, dtype=np.float64)
    if values.size == 0 or not np.any(values):
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # ties/zeros: scipy warns, p stays valid
        return float(wilcoxon(values).pvalue)


def paired_summary(diffs: Sequence[float]) -> dict[str, float]:
    """Median, bootstrap CI bounds (of the mean) and Wilcoxon p-value of one group's paired
    differences. The median goes with the Wilcoxon test, which is about where the middle of the
    differences lies; a few collapsed runs with huge losses move the mean but not the median."""
    low, high = bootstrap_ci(diffs)
    values = np.asarray(diffs, dtype=np.float64)
    median = float(np.median(values)) if values.size else math.nan
    return {"median_diff": median, "ci_low": low, "ci_high": high, "p_value": wilcoxon_p(diffs)}
