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
    """Run (or complete) the grid and write report.json/report.md/plots; returns (report dict, report.md path).

    The study's folder goes through :class:`linchain.outputs.OutputFolder` (kind ``compare``): checked
    before any data or model loads, and locked for the whole grid, so a second compare into the same
    folder at once is refused. ``--sweep_only`` parts are the exception: they are meant to run in
    parallel in one folder (one per method and rate, ``benchmarks/gpu_compare.sh``), so they only
    check it; each of their steps writes its own files (train and eval folders lock themselves).
    """
    from contextlib import nullcontext

    from .grid import Grid, prepare_environment
    from .report import build_report, write_report

    prepare_environment(train_args)
    grid = Grid(compare_args, model_args, data_args, train_args, **grid_kwargs)  # validates the arguments
    out = grid.output_folder()
    out.check()
    grid.preflight()
    if compare_args.sweep_only:
        guard = nullcontext(out.check())
    else:
        # a fresh folder that fails before any step wrote something (a refusal after the data loaded) is
        # left as it was found, so the corrected command runs again there
        guard = out.writing(saved=("data", "runs", "base", "settings.json"))
    with guard:
        result = grid.run()
        report = build_report(result, compare_args.baseline, compare_args.n_resamples, compare_args.target_loss)
        path = write_report(result, report)
    return report, path
