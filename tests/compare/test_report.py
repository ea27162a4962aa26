"""Convergence measures of the report, by hand."""

from __future__ import annotations

import pytest

from linchain.compare.report import loss_auc, smooth, steps_to_target


def test_steps_to_target_uses_the_smoothed_loss():
    losses = [(1, 3.0), (2, 1.0), (3, 2.0), (4, 0.5), (5, 0.5)]
    assert smooth(losses, 2) == [(1, 3.0), (2, 2.0), (3, 1.5), (4, 1.25), (5, 0.5)]
    assert steps_to_target(losses, 1.5, 2) == 3  # the single step-2 dip to 1.0 does not count
    assert steps_to_target(losses, 0.1, 2) is None


def test_loss_auc_is_the_mean_loss_per_step():
    # trapezoids: (3+1)/2 + (1+2)/2 + (2+0.5)/2 + (0.5+0.5)/2 = 5.25 over 4 steps
    assert loss_auc([(1, 3.0), (2, 1.0), (3, 2.0), (4, 0.5), (5, 0.5)]) == pytest.approx(5.25 / 4)
    assert loss_auc([(1, 2.0)]) == 2.0 and loss_auc([]) is None
