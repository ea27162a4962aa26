"""The paired statistics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from linchain.compare.stats import minimum_detectable_difference, paired_comparison, row_differences


def test_known_paired_difference_and_its_bootstrap_interval():
    # one task, one seed, 4 rows: a is right where b is, plus row 0 -> D = 1/4 exactly.
    a = {"t": [[1, 1, 1, 0]]}
    b = {"t": [[0, 1, 1, 0]]}
    c = paired_comparison(a, b, n_resamples=20000)
    assert c["difference"] == pytest.approx(0.25)
    # resampled D = (times row 0 drawn) / 4: P(0 draws) = (3/4)^4 = 0.32 > 2.5%, so ci_low = 0;
    # P(D* <= 1/2) = 0.949 < 97.5% <= P(D* <= 3/4) = 0.996, so ci_high = 3/4.
    assert (c["ci_low"], c["ci_high"]) == (pytest.approx(0.0), pytest.approx(0.75))
    # one discordant row: every sign flip is as extreme as the observation -> p = 1
    assert c["p_value"] == pytest.approx(1.0) and c["verdict"] == "no detectable difference"
    assert c["discordant"] == [1, 0] and c["per_seed_difference"] == [pytest.approx(0.25)]


def test_p_value_is_mcnemars_exact_test_for_one_seed():
    # 20 rows, 8 discordant, all in a's favour: exact McNemar p = 2 * 0.5^8 = 0.0078125
    a = {"t": [[1] * 8 + [1] * 6 + [0] * 6]}
    b = {"t": [[0] * 8 + [1] * 6 + [0] * 6]}
    c = paired_comparison(a, b, n_resamples=40000)
    assert c["difference"] == pytest.approx(8 / 20)
    # exact, not a randomisation estimate (found by the break-it check: 0.327 reported for McNemar's 0.320)
    assert c["p_value"] == 2 * 0.5**8
    assert c["verdict"] == "better" and c["ci_low"] > 0
    # 9 discordant rows split 7 : 2 -> 2 * (1 + 9 + 36) / 512
    a = {"t": [[1] * 7 + [0] * 2 + [1] * 5]}
    b = {"t": [[0] * 7 + [1] * 2 + [1] * 5]}
    assert paired_comparison(a, b, n_resamples=100)["p_value"] == pytest.approx(2 * 46 / 512, rel=1e-12)
    # large n: exact in integers, no overflow (600 rows, 130 vs 70 discordant), against the normal approximation
    a = {"t": [[1] * 130 + [0] * 70 + [1] * 400]}
    b = {"t": [[0] * 130 + [1] * 70 + [1] * 400]}
    p = paired_comparison(a, b, n_resamples=100)["p_value"]
    z = (130 - 70 - 1) / math.sqrt(200)  # continuity-corrected McNemar
    assert p == pytest.approx(math.erfc(z / math.sqrt(2)), rel=0.2) and 0 < p < 1e-4


def test_identical_methods_no_detectable_difference():
    rng = np.random.default_rng(1)
    a = {t: rng.integers(0, 2, size=(3, 50)).tolist() for t in ("x", "y")}
    c = paired_comparison(a, a, n_resamples=2000)
    assert c["difference"] == 0.0 and c["ci_low"] == 0.0 and c["ci_high"] == 0.0
    assert c["p_value"] == pytest.approx(1.0) and c["verdict"] == "no detectable difference"


def test_clear_difference_better_and_worse():
    rng = np.random.default_rng(0)
    good = {t: (rng.random((2, 200)) < 0.8).astype(int).tolist() for t in ("x", "y")}
    poor = {t: (rng.random((2, 200)) < 0.4).astype(int).tolist() for t in ("x", "y")}
    c = paired_comparison(good, poor, n_resamples=2000)
    assert c["verdict"] == "better" and c["ci_low"] > 0.2 and c["p_value"] < 0.001
    assert c["ci_low"] <= c["difference"] <= c["ci_high"]
    assert paired_comparison(poor, good, n_resamples=2000)["verdict"] == "worse"


def test_difference_is_the_unweighted_task_average_with_seeds_paired():
    # task x: 2 rows; task y: 4 rows; two seeds. D = mean over tasks of the per-task differences.
    a = {"x": [[1, 1], [1, 0]], "y": [[1, 0, 0, 0], [0, 0, 0, 0]]}
    b = {"x": [[0, 1], [0, 0]], "y": [[0, 0, 0, 0], [0, 0, 0, 1]]}
    d = row_differences(a, b)
    assert d["x"].tolist() == [1.0, 0.0] and d["y"].tolist() == [0.5, 0.0, 0.0, -0.5]
    c = paired_comparison(a, b, n_resamples=1000)
    assert c["difference"] == pytest.approx((0.5 + 0.0) / 2)
    assert c["per_seed_difference"] == [pytest.approx((0.5 + 0.25) / 2), pytest.approx((0.5 - 0.25) / 2)]


def test_minimum_detectable_difference_formula():
    # d = +-1 on half the rows, 0 elsewhere: var(d, ddof=1) = n/2 / (n-1); se = sqrt(var / n)
    n = 100
    d = {"t": np.array([1.0, -1.0] * 25 + [0.0] * 50)}
    se = math.sqrt((50 / (n - 1)) / n)
    assert minimum_detectable_difference(d) == pytest.approx((1.959964 + 0.841621) * se, rel=1e-5)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="same shape"):
        paired_comparison({"t": [[1, 0]]}, {"t": [[1, 0, 1]]})
    with pytest.raises(ValueError, match="same tasks"):
        paired_comparison({"t": [[1]]}, {"u": [[1]]})
