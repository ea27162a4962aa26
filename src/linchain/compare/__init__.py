"""``linchain compare``: is method X better than Y on this data? Tuned, controlled, paired, multi-seed.

:func:`compare` runs the grid (:mod:`.grid`), then writes the report (:mod:`.report`); the
statistics are in :mod:`.stats`, the method names in :mod:`.methods`, the presets in :mod:`.presets`.
"""

from __future__ import annotations

from .args import CompareArguments
from .methods import MethodSpec, parse_method, parse_methods
from .stats import paired_comparison

__all__ = ["CompareArguments", "MethodSpec", "compare", "paired_comparison", "parse_method", "parse_methods"]


def compare(compare_args, model_args, data_args, train_args, **grid_kwargs):
    """Run (or complete) the grid and write report.json/report.md/plots; returns (report dict, report.md path)."""
    from .grid import run_grid
    from .report import build_report, write_report

    grid = run_grid(compare_args, model_args, data_args, train_args, **grid_kwargs)
    report = build_report(grid, compare_args.baseline, compare_args.n_resamples, compare_args.target_loss)
    return report, write_report(grid, report)
