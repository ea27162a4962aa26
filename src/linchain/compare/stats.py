"""Paired statistics of two methods scored on the same test rows with the same seeds.

Data: for each task ``t`` a 0/1 matrix ``correct[t]`` of shape (seeds, rows_t) per method, seed
``s`` of one method paired with seed ``s`` of the other (same data order, same test rows). The
statistic is the difference of the task-averaged accuracies (the paper's "Avg." column)::

    d_t,i = mean_s (a[t][s, i] - b[t][s, i])          per-row difference, seeds averaged
    D     = (1 / T) sum_t mean_i d_t,i               = avg accuracy(a) - avg accuracy(b)

- 95% confidence interval: paired bootstrap over rows (rows resampled with replacement within
  each task, the seeds of a row kept together), percentile interval of ``D``.
- p-value: sign-flip randomisation test over rows (under "no difference" a row's two methods are
  exchangeable, so each ``d_t,i`` flips sign with probability 1/2); two-sided. With one seed and one
  task its exact distribution is McNemar's exact test (only discordant rows matter, each +-1 with
  probability 1/2), so there the p-value is that test's, computed exactly (a binomial tail), not drawn.
- minimum detectable difference: ``(z_{1-alpha/2} + z_{power}) * se(D)``, ``se(D)^2 = sum_t
  var(d_t) / (n_t T^2)``: the smallest true difference this many rows, with this much
  disagreement between the methods, would detect with 80% power.
- verdict: ``better`` / ``worse`` when p < alpha and the interval excludes 0, else ``no detectable
  difference``.

Rows, not seeds, are resampled: the interval is about the test-set sample given these trained
runs; seed-to-seed spread is reported beside it (mean ± std, and per-seed differences).
"""

from __future__ import annotations

import math
import statistics
from fractions import Fraction
from typing import Mapping, Sequence

import numpy as np

__all__ = ["VERDICTS", "minimum_detectable_difference", "paired_comparison", "row_differences"]

VERDICTS = ("better", "worse", "no detectable difference")
_CHUNK = 1000  # bootstrap draws per block (bounds memory: CHUNK x rows indices)


def row_differences(
    a: Mapping[str, Sequence[Sequence[int]]], b: Mapping[str, Sequence[Sequence[int]]]
) -> dict[str, np.ndarray]:
    """``d_t`` (rows_t,) per task: a's minus b's correctness, averaged over the paired seeds."""
    if set(a) != set(b):
        raise ValueError(f"paired comparison needs the same tasks; got {sorted(a)} and {sorted(b)}")
    out = {}
    for task in a:
        x, y = np.asarray(a[task], dtype=float), np.asarray(b[task], dtype=float)
        if x.ndim != 2 or x.shape != y.shape or x.shape[1] == 0:
            raise ValueError(
                f"task {task}: correctness must be (seeds, rows) arrays of the same shape; got {x.shape} and {y.shape}"
            )
        out[task] = (x - y).mean(axis=0)
    return out


def _standard_error(d: Mapping[str, np.ndarray]) -> float:
    T = len(d)
    var = sum((v.var(ddof=1) if v.size > 1 else 0.0) / v.size for v in d.values())
    return math.sqrt(var) / T


def _mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p: P(a split of the n = a_only + b_only discordant rows at least this uneven)
    under Binomial(n, 1/2), i.e. ``min(1, 2 P(X <= min(a_only, b_only)))``, in exact integer arithmetic."""
    n, low = a_only + b_only, min(a_only, b_only)
    tail = sum(math.comb(n, k) for k in range(low + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2**n)))


def minimum_detectable_difference(d: Mapping[str, np.ndarray], alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true difference of D detected with probability ``power`` at level ``alpha`` (normal approximation)."""
    z = statistics.NormalDist()
    return (z.inv_cdf(1 - alpha / 2) + z.inv_cdf(power)) * _standard_error(d)


def paired_comparison(
    a: Mapping[str, Sequence[Sequence[int]]],
    b: Mapping[str, Sequence[Sequence[int]]],
    n_resamples: int = 10000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict:
    """Difference (a - b) of task-averaged accuracy with its bootstrap CI, p-value, verdict and detectable size.

    ``a``/``b``: task -> (seeds, rows) 0/1 correctness. Returns ``difference``, ``ci_low``, ``ci_high``,
    ``p_value``, ``verdict``, ``min_detectable_difference``, ``per_seed_difference`` (D seed by seed),
    ``rows`` (per task), ``seeds``, ``discordant`` (a right & b wrong, a wrong & b right; over rows x seeds).
    """
    d = row_differences(a, b)
    tasks = sorted(d)
    T = len(tasks)
    observed = sum(float(d[t].mean()) for t in tasks) / T
    rng = np.random.default_rng(seed)
    boot = np.zeros(n_resamples)
    flip = np.zeros(n_resamples)
    for start in range(0, n_resamples, _CHUNK):
        n = min(_CHUNK, n_resamples - start)
        for t in tasks:
            v = d[t]
            boot[start : start + n] += v[rng.integers(0, v.size, size=(n, v.size))].mean(axis=1) / T
            signs = rng.integers(0, 2, size=(n, v.size)) * 2 - 1
            flip[start : start + n] += (signs * v).mean(axis=1) / T
    ci_low, ci_high = (float(q) for q in np.quantile(boot, [alpha / 2, 1 - alpha / 2]))
    seeds = len(np.asarray(next(iter(a.values()))))
    a_only = sum(int(np.sum((np.asarray(a[t]) == 1) & (np.asarray(b[t]) == 0))) for t in tasks)
    b_only = sum(int(np.sum((np.asarray(a[t]) == 0) & (np.asarray(b[t]) == 1))) for t in tasks)
    if seeds == 1 and T == 1:
        p_value = _mcnemar_exact(a_only, b_only)
    else:
        # floating sums of the same values may differ in the last bits: compare with a tolerance
        extreme = int(np.sum(np.abs(flip) >= abs(observed) - 1e-12))
        p_value = (1 + extreme) / (1 + n_resamples)
    if p_value < alpha and ci_low > 0:
        verdict = "better"
    elif p_value < alpha and ci_high < 0:
        verdict = "worse"
    else:
        verdict = "no detectable difference"
    per_seed = [
        sum(float(np.mean(np.asarray(a[t], dtype=float)[s] - np.asarray(b[t], dtype=float)[s])) for t in tasks) / T
        for s in range(seeds)
    ]
    return {
        "difference": observed,
        "ci_low": ci_low,
        "ci_high": ci_high,
        "p_value": p_value,
        "verdict": verdict,
        "min_detectable_difference": minimum_detectable_difference(d, alpha),
        "per_seed_difference": per_seed,
        "rows": {t: int(d[t].size) for t in tasks},
        "seeds": seeds,
        "discordant": [a_only, b_only],
        "n_resamples": n_resamples,
        "alpha": alpha,
    }
