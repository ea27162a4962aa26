"""From a finished grid to ``report.json``, ``report.md``, ``convergence.png`` and ``lr_sweep.png``."""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Sequence

from ..io import atomic_files, atomic_write_json, strict_json
from .grid import GridResult
from .stats import paired_comparison

__all__ = ["REPORT_SCHEMA_VERSION", "build_report", "loss_auc", "markdown", "smooth", "steps_to_target", "write_report"]

#: 2: a mean over one seed has std null (it was 0.0); [mean, std, n], n the seeds it covers
REPORT_SCHEMA_VERSION = 2


# ---------------------------------------------------------------------------------------- convergence
def smooth(losses: Sequence[tuple[int, float]], window: int) -> list[tuple[int, float]]:
    """Trailing moving average of per-step losses (single steps are too noisy to compare)."""
    out, values = [], []
    for step, loss in losses:
        values.append(loss)
        tail = values[-window:]
        out.append((step, sum(tail) / len(tail)))
    return out


def steps_to_target(losses: Sequence[tuple[int, float]], target: float, window: int) -> Optional[int]:
    """First step whose smoothed loss is <= target; None if the run never gets there."""
    return next((step for step, loss in smooth(losses, window) if loss <= target), None)


def loss_auc(losses: Sequence[tuple[int, float]]) -> Optional[float]:
    """Area under the training-loss curve per step (trapezoids over the logged steps / steps covered):
    the mean loss over the run, lower = faster convergence."""
    if len(losses) < 2:
        return losses[0][1] if losses else None
    area = sum((s2 - s1) * (l1 + l2) / 2 for (s1, l1), (s2, l2) in zip(losses, losses[1:]))
    return area / (losses[-1][0] - losses[0][0])


def _mean_std(values: Sequence[Optional[float]]) -> Optional[list]:
    """[mean, sample std, n] of the values present (None: a seed without this figure), std None for a single
    value (a spread of one seed is unknown, not 0); n says how many seeds the figures cover."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return [statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values)]


# ---------------------------------------------------------------------------------------- report
def _effective_rank(run: dict) -> Optional[float]:
    """Mean effective rank of the run's ΔW over layers (``linchain analyze``), cached beside the run."""
    if not run.get("adapter"):
        return None
    cache = Path(run["step_dir"]) / "effective_rank.json"
    try:
        value = json.loads(cache.read_text())["mean_effective_rank"]
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none yet, or a damaged cache of ours: computed again below and rewritten
    from ..analysis import analyze_adapter

    try:
        value = analyze_adapter(run["adapter"]).summary()["all"]["mean_effective_rank"]
    except (ValueError, OSError, KeyError):  # e.g. a format analyze does not read; the report says "-"
        return None
    atomic_write_json(cache, {"mean_effective_rank": value})
    return value


def _correct(run: dict, tasks: list[str]) -> dict[str, list[int]]:
    return {t: run["test"]["tasks"][t]["per_row"] for t in tasks}


def _check_rows(runs: dict[str, list[dict]], tasks: list[str], base: Optional[dict]) -> None:
    """Every run (and the base model) scored on the same tasks and test rows, or a ValueError naming the record."""
    ref = None
    scored = [
        (f"{name} seed {r['seed']} ({Path(r['step_dir']) / 'test.json'})", r["test"])
        for name, rs in runs.items()
        for r in rs
    ]
    if base:
        scored.append(("the base model (base/test.json)", base))
    for who, record in scored:
        if sorted(record["tasks"]) != sorted(tasks):
            raise ValueError(
                f"{who} scores tasks {sorted(record['tasks'])}, the others {sorted(tasks)}; rerun in a fresh --output_dir"
            )
        rows = {t: record["tasks"][t]["rows"] for t in tasks}
        if ref is None:
            ref = rows
        elif rows != ref:
            raise ValueError(f"{who} was scored on other test rows; rerun in a fresh --output_dir")


def build_report(
    grid: GridResult,
    baseline: str,
    n_resamples: int = 10000,
    target_loss: Optional[float] = None,
    effective_rank: bool = True,
) -> dict[str, Any]:
    """Everything the report shows, as one JSON-able dict (see ``REPORT_SCHEMA_VERSION``)."""
    runs = {name: rs for name, rs in grid.runs.items() if rs}
    any_run = next((r for rs in runs.values() for r in rs), None)
    source = any_run["test"] if any_run else grid.base
    tasks = list(source["tasks"]) if source else []
    _check_rows(runs, tasks, grid.base)
    max_steps = max((r["losses"][-1][0] for rs in runs.values() for r in rs if r["losses"]), default=1)
    window = max(1, max_steps // 10)
    final = {
        name: _mean_std([smooth(r["losses"], window)[-1][1] for r in rs if r["losses"]]) for name, rs in runs.items()
    }
    if target_loss is None and final.get(baseline):
        target_loss = final[baseline][0]  # the paper's claim: reaching the baseline's end-of-run loss in fewer steps
    methods: dict[str, Any] = {}
    for spec in grid.methods:
        rs = runs.get(spec.name, [])
        per_seed = [
            {
                "seed": r["seed"],
                "per_task": {t: r["test"]["tasks"][t]["accuracy"] for t in tasks},
                "average": r["test"]["average"],
            }
            for r in rs
        ]
        methods[spec.name] = {
            "learning_rate": grid.chosen.get(spec.name),
            "sweep": [
                {
                    "learning_rate": s["learning_rate"],
                    "status": s["status"],
                    "final_loss": s["final_loss"],
                    "validation_accuracy": s["validation"]["average"] if s.get("validation") else None,
                    "validation_per_task": {t: v["accuracy"] for t, v in s["validation"]["tasks"].items()}
                    if s.get("validation")
                    else None,
                }
                for s in grid.sweep.get(spec.name, [])
            ],
            "seeds": [r["seed"] for r in rs],
            "per_seed": per_seed,
            "per_task": {t: _mean_std([p["per_task"][t] for p in per_seed]) for t in tasks},
            "average": _mean_std([p["average"] for p in per_seed]),
            "trainable_params": rs[0]["trainable_params"] if rs else None,
            "effective_rank": _mean_std([_effective_rank(r) for r in rs]) if effective_rank else None,
            "convergence": {
                "final_loss": final.get(spec.name),
                "steps_to_target": [
                    steps_to_target(r["losses"], target_loss, window) if target_loss is not None else None for r in rs
                ],
                "loss_auc": _mean_std([loss_auc(r["losses"]) for r in rs]),
            },
            "train_wall_s": _mean_std([r["train_wall_s"] for r in rs]),
            "eval_wall_s": _mean_std([r["test"]["eval_wall_s"] for r in rs]),
        }
    comparisons, unpaired = [], []
    base_runs = {r["seed"]: r for r in runs.get(baseline, [])}
    for spec in grid.methods:
        if spec.name == baseline or spec.name not in runs:
            continue
        seeds = [r["seed"] for r in runs[spec.name] if r["seed"] in base_runs]
        if not seeds:  # tested, but on no seed the baseline was tested on: said, not dropped
            unpaired.append(spec.name)
            continue
        mine = {r["seed"]: r for r in runs[spec.name]}
        a = {t: [mine[s]["test"]["tasks"][t]["per_row"] for s in seeds] for t in tasks}
        b = {t: [base_runs[s]["test"]["tasks"][t]["per_row"] for s in seeds] for t in tasks}
        overall = paired_comparison(a, b, n_resamples=n_resamples)
        per_task = {
            t: {
                k: v
                for k, v in paired_comparison({t: a[t]}, {t: b[t]}, n_resamples=n_resamples).items()
                if k in ("difference", "ci_low", "ci_high", "p_value", "verdict")
            }
            for t in tasks
        }
        comparisons.append(
            {
                "method": spec.name,
                "baseline": baseline,
                "paired_seeds": seeds,
                **overall,
                "seeds_agree": _same_sign(overall["per_seed_difference"]),
                "per_task": per_task,
            }
        )
    prior = {}
    if source:
        for t in tasks:
            gold = Counter(source["tasks"][t]["gold"])
            prior[t] = max(gold.values()) / sum(gold.values())
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "settings": {
            **grid.settings,
            "methods": [s.name for s in grid.methods],
            "baseline": baseline,
            "seeds": grid.seeds,
            "learning_rates": grid.learning_rates,
            "n_resamples": n_resamples,
        },
        "eval_tasks": tasks,
        "test_rows": _test_rows(grid),
        "validation_rows": _validation_rows_used(grid),
        "unmatchable_gold": _unmatchable_gold(grid, source),
        "base": None
        if not grid.base
        else {"per_task": {t: grid.base["tasks"][t]["accuracy"] for t in tasks}, "average": grid.base["average"]},
        "label_prior": {"per_task": prior, "average": statistics.fmean(prior.values()) if prior else None},
        "smoothing_window": window,
        "target_loss": target_loss,
        "methods": methods,
        "comparisons": comparisons,
        "unpaired": unpaired,
        "failures": grid.failures,
        "not_run": grid.not_run,
        "not_reported": _not_reported(grid),
    }


def _validation_rows_used(grid: GridResult) -> Optional[int]:
    """How many validation rows the split kept (rows repeating a training prompt go back to training)."""
    folder = Path(grid.out) / "data"
    files = sorted(folder.glob("validation-*.json"))
    if not files:  # none written: every carved row went back to training (0), or the data is not prepared
        return 0 if (folder / "train.json").exists() else None
    return sum(len(json.loads(f.read_text())) for f in files)


def _unmatchable_gold(grid: GridResult, test: Optional[dict]) -> dict[str, dict[str, list[int]]]:
    """Rows whose gold answer the task's rule can never match, [count, total rows] per task, for the validation
    rows (any rate's record: all score the same rows) and the test rows: each counts as wrong for every run.
    (Break-it check: validation rows of mixed-task training data that partly could not match were said
    on the console only.)"""
    validation = next((s["validation"] for rs in grid.sweep.values() for s in rs if s.get("validation")), None)
    return {
        kind: {
            t: [v["unmatchable_gold"], v["total"]]
            for t, v in record["tasks"].items()
            if v.get("unmatchable_gold")  # records from before the count was kept have none
        }
        for kind, record in (("validation", validation), ("test", test))
        if record
    }


def _validation_rows(report: dict, settings: dict) -> str:
    asked, kept = settings["eval"]["validation_size"], report.get("validation_rows")
    return (
        str(asked)
        if kept is None or kept == asked
        else f"{kept} (of {asked} asked for; the others repeat training prompts)"
    )


def _same_sign(differences: Sequence[float]) -> bool:
    """Whether the per-seed differences point one way (all > 0, all < 0, or all 0). The interval and p
    resample rows, not seeds: a verdict whose seeds disagree rests on the seeds drawn (said in the report)."""
    return all(d > 0 for d in differences) or all(d < 0 for d in differences) or all(d == 0 for d in differences)


def _seed_caveat(comparison: dict) -> str:
    """' (seeds disagree in sign)' after a better/worse verdict whose seeds point both ways, else ''."""
    decided = comparison["verdict"] in ("better", "worse")
    return " (seeds disagree in sign)" if decided and not comparison.get("seeds_agree", True) else ""


def _not_reported(grid: GridResult) -> list[str]:
    """Tested runs in the folder (runs/<method>/<rate>/seed<s>/test.json) of methods or seeds this report leaves
    out: a --report_only naming fewer of them replaces a fuller report, and says what else is there."""
    named, seeds = {spec.name for spec in grid.methods}, set(grid.seeds)
    found: dict[str, set[int]] = {}
    for test in sorted((Path(grid.out) / "runs").glob("*/*/seed*/test.json")):
        method, seed = test.parts[-4], test.parts[-2][len("seed") :]
        if seed.isdigit() and (method not in named or int(seed) not in seeds):
            found.setdefault(method, set()).add(int(seed))
    return [f"{method}: seed {_seed_list(sorted(s))}" for method, s in sorted(found.items())]


def _test_rows(grid: GridResult) -> Optional[dict]:
    """Per --eval_data: rows, rows kept, rows dropped as training prompts (--test_unseen_only), or None."""
    from .grid import TEST_INFO, read_json_object

    path = Path(grid.out) / "data" / TEST_INFO
    if not path.exists():
        return None
    why = "it records which test rows were kept; rerun the study in a fresh --output_dir"
    info = read_json_object(path, why)
    if not all(isinstance(v, dict) for v in info.values()):
        raise ValueError(f"{path} is not a mapping of test data to row counts: {why}")
    return info


# ---------------------------------------------------------------------------------------- markdown
def _pct(ms: Optional[Sequence], seeds: int) -> str:
    return _num(None if ms is None else [100 * ms[0], None if ms[1] is None else 100 * ms[1], *ms[2:]], seeds, ".1f")


def _num(ms: Optional[Sequence], seeds: int, fmt: str = ".3f") -> str:
    """``mean ± std``; the mean alone for one seed (its spread is unknown); ``(n of N seeds)`` when the
    figure covers fewer of the method's ``seeds`` (a seed's adapter or record is missing)."""
    if ms is None:
        return "-"
    text = f"{ms[0]:{fmt}}" if ms[1] is None else f"{ms[0]:{fmt}} ± {ms[1]:{fmt}}"
    n = ms[2] if len(ms) > 2 else seeds
    return text if n >= seeds else f"{text} ({n} of {seeds} seeds)"


def _seed_list(seeds: Sequence[int]) -> str:
    return ",".join(str(s) for s in seeds) if seeds else "-"


def _row(cells: Sequence[str]) -> str:
    """One markdown table row."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown(report: dict[str, Any]) -> str:
    """report.md: readable alone (settings, tables, verdicts, how to read them)."""
    s, tasks, methods = report["settings"], report["eval_tasks"], report["methods"]
    train, model = s.get("train", {}), s.get("model", {})
    lines = [
        "# linchain compare",
        "",
        f"Model `{model.get('model_name_or_path')}`, r = {model.get('r')}, alpha = {model.get('alpha')}, targets "
        f"`{model.get('target_modules')}`; {train.get('max_steps')} steps of {train.get('per_device_train_batch_size')} x "
        f"{train.get('gradient_accumulation_steps')} sequences (cutoff {s.get('data', {}).get('cutoff_len')}), training data "
        f"{', '.join('`' + d + '`' for d in s.get('data', {}).get('data', []))}.",
        f"Methods {', '.join(s['methods'])}; baseline **{s['baseline']}**; seeds {s['seeds']}; learning rates swept "
        f"{s['learning_rates']} (first seed, {_validation_rows(report, s)} validation rows carved from the training data).",
        f"Test: {', '.join(s['eval']['eval_data'])} ("
        + (f"first {s['eval']['eval_limit']} rows each" if s["eval"]["eval_limit"] else "all rows")
        + (
            " not seen in training"
            if any(n["dropped_seen_in_training"] for n in (report.get("test_rows") or {}).values())
            else ""
        )
        + ", the same for every run), "
        f"scorer `{s['eval']['scorer']}`."
        + "".join(
            f" {spec}: {n['dropped_seen_in_training']} of {n['rows']} rows repeat a training prompt and were "
            f"dropped (--test_unseen_only), {n['kept']} kept."
            for spec, n in (report.get("test_rows") or {}).items()
        )
        + "".join(
            f" {n} of the {total} {kind} rows of {task} have a gold answer its rule can never match: they count as "
            "wrong for every run."
            for kind, per_task in (report.get("unmatchable_gold") or {}).items()
            for task, (n, total) in per_task.items()
        ),
        "",
        "## Accuracy (%), mean ± std over seeds",
        "",
        _row(["method", "lr", "params", "seeds", *tasks, "average"]),
        _row(["---", "---:", "---:", "---", *["---:"] * (len(tasks) + 1)]),
    ]
    # every row has the header's cells: with no test scores at all (every test step failed) the table
    # has no task columns, and a row's cells are joined from a list, never spliced from strings
    if report["label_prior"]["per_task"]:
        p = report["label_prior"]
        lines.append(
            _row(
                [
                    "majority label (prior)",
                    "",
                    "",
                    "",
                    *(f"{100 * p['per_task'][t]:.1f}" for t in tasks),
                    f"{100 * p['average']:.1f}",
                ]
            )
        )
    if report["base"]:
        b = report["base"]
        lines.append(
            _row(
                [
                    "base model (no fine-tuning)",
                    "",
                    "0",
                    "",
                    *(f"{100 * b['per_task'][t]:.1f}" for t in tasks),
                    f"{100 * b['average']:.1f}",
                ]
            )
        )
    for name, m in methods.items():
        params = f"{m['trainable_params']:,}" if m["trainable_params"] else "-"
        lr = "-" if m["learning_rate"] is None else f"{m['learning_rate']:g}"
        lines.append(
            _row(
                [
                    name,
                    lr,
                    params,
                    _seed_list(m["seeds"]),
                    *(_pct(m["per_task"].get(t), len(m["seeds"])) for t in tasks),
                    f"**{_pct(m['average'], len(m['seeds']))}**",
                ]
            )
        )
    if not tasks:
        if report["failures"]:
            why = "see Failures below"
        else:
            why = "see Not run yet below" if report.get("not_run") else "a --sweep_only call scores none"
        lines += ["", f"No test scores: every test step failed or has not run ({why})."]
    lines += [
        "",
        f"## Against {s['baseline']} (paired over the same test rows and seeds)",
        "",
        "| method | seeds paired | difference (points) | 95% CI | p | verdict | detectable at this n | per seed |",
        "|---|---|---:|---|---:|---|---:|---|",
    ]
    for name in report.get("unpaired", []):
        lines.append(
            f"| {name} | none | - | - | - | not compared: no test of a seed {s['baseline']} was tested on | - | - |"
        )
    for c in report["comparisons"]:
        # each per-seed difference named by its seed: with seeds still running, a method pairs with
        # fewer of the baseline's seeds than the accuracy table above averages over
        per_seed = ", ".join(f"{seed}: {100 * d:+.1f}" for seed, d in zip(c["paired_seeds"], c["per_seed_difference"]))
        lines.append(
            f"| {c['method']} | {_seed_list(c['paired_seeds'])} | {100 * c['difference']:+.1f} | "
            f"[{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}] | "
            f"{c['p_value']:.3g} | **{c['verdict']}**{_seed_caveat(c)} | "
            f"±{100 * c['min_detectable_difference']:.1f} | {per_seed} |"
        )
    lines += [
        "",
        "How to read: the difference is the method's task-averaged accuracy minus the baseline's. The interval is a "
        "paired bootstrap over test rows (seeds kept together), p a sign-flip randomisation test over rows (for one "
        "seed and one task McNemar's exact test, computed exactly). *better*/*worse* need p < 0.05 and an interval that excludes 0; otherwise *no detectable "
        "difference*, which is not evidence of equality: differences smaller than the 'detectable' column (80% power) "
        "are likely to be missed. Rows are resampled, seeds are not: a *better*/*worse* marked *seeds disagree in "
        "sign* rests on which seeds were drawn, not on the method alone.",
        "",
        "## Learning-rate sweep (validation accuracy %, first seed)",
        "",
        "| method | " + " | ".join(f"{lr:g}" for lr in s["learning_rates"]) + " | chosen |",
        "|---|" + "---:|" * (len(s["learning_rates"]) + 1),
    ]
    for name, m in methods.items():
        by_lr = {x["learning_rate"]: x for x in m["sweep"]}
        cells = []
        for lr in s["learning_rates"]:
            x = by_lr.get(lr)
            cells.append(
                "-"
                if x is None
                else x["status"]
                if x["status"] != "ok"
                else "-"
                if x["validation_accuracy"] is None
                else f"{100 * x['validation_accuracy']:.1f}"
            )
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {'-' if m['learning_rate'] is None else format(m['learning_rate'], 'g')} |"
        )
    target = report["target_loss"]
    lines += [
        "",
        "## Convergence, parameters, effective rank",
        "",
        f"| method | final train loss (smoothed, window {report['smoothing_window']}) | steps to "
        + (f"{target:.4f}" if target is not None else "target")
        + " per seed | loss AUC (mean loss per step) | "
        "trainable params | mean effective rank of ΔW | train s | test eval s |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for name, m in methods.items():
        c, n = m["convergence"], len(m["seeds"])
        steps = ", ".join("never" if x is None else str(x) for x in c["steps_to_target"]) or "-"
        params = f"{m['trainable_params']:,}" if m["trainable_params"] else "-"
        lines.append(
            f"| {name} | {_num(c['final_loss'], n)} | {steps} | {_num(c['loss_auc'], n)} | {params} | "
            f"{_num(m['effective_rank'], n, '.2f')} | {_num(m['train_wall_s'], n, '.0f')} | "
            f"{_num(m['eval_wall_s'], n, '.0f')} |"
        )
    lines += [
        "",
        "Steps to target: the first step whose moving-average training loss reaches the baseline's final one "
        "('never' = not within the run). Effective rank: `linchain analyze` (exp of the entropy of the normalised "
        "singular values), averaged over layers. Plots: convergence.png, lr_sweep.png.",
    ]
    if report["not_run"]:
        lines += [
            "",
            f"## Not run yet ({len(report['not_run'])} steps; a partial report, written with --report_only)",
            "",
            "A method whose sweep is incomplete has a provisional learning rate.",
            "",
        ] + [f"- {step}" for step in report["not_run"]]
    if report.get("not_reported"):
        lines += [
            "",
            "## In this folder but not in this report",
            "",
            "Finished runs of methods or seeds this call did not name (`--methods`, `--seeds`); name them to "
            "report them:",
            "",
        ] + [f"- {entry}" for entry in report["not_reported"]]
    if report["failures"]:
        lines += ["", "## Failures (run again by the next call; a damaged record fails until it is deleted)", ""] + [
            f"- {f['step']}: {f['error'].splitlines()[0]}" for f in report["failures"]
        ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------- plots
def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on servers
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_convergence(grid: GridResult, window: int, target: Optional[float], png: Path) -> Optional[Path]:
    """Training loss vs step per method at its chosen rate (smoothed mean over seeds, band = seed min..max)."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for spec in grid.methods:
        curves = [smooth(r["losses"], window) for r in grid.runs.get(spec.name, []) if r["losses"]]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        steps = [curves[0][i][0] for i in range(n)]
        values = [[c[i][1] for c in curves] for i in range(n)]
        (line,) = ax.plot(steps, [statistics.fmean(v) for v in values], label=f"{spec.name} ({len(curves)} seeds)")
        ax.fill_between(steps, [min(v) for v in values], [max(v) for v in values], color=line.get_color(), alpha=0.15)
    if target is not None:
        ax.axhline(target, color="grey", linestyle=":", linewidth=1, label=f"target {target:.3f}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"training loss (moving average of {window})")
    if ax.get_legend_handles_labels()[0]:  # nothing drawn yet (no finished run): no empty legend, no warning
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return png


def plot_sweep(report: dict[str, Any], png: Path) -> Optional[Path]:
    """Validation accuracy against the learning rate, one line per method (first seed)."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for name, m in report["methods"].items():
        points = [
            (x["learning_rate"], x["validation_accuracy"]) for x in m["sweep"] if x["validation_accuracy"] is not None
        ]
        if points:
            ax.plot(*zip(*points), "o-", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("validation accuracy (first seed)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return png


def write_report(grid: GridResult, report: dict[str, Any]) -> Path:
    """report.json, report.md and the two plots in the grid's folder, all written before any replaces its
    predecessor (a failure leaves the previous report whole); returns report.md's path."""
    out = grid.out
    plots = _pyplot() is not None  # without matplotlib the report has no plots (and older ones are kept)
    names = ["report.json", "report.md", *(["convergence.png", "lr_sweep.png"] if plots else [])]
    with atomic_files([out / name for name in names]) as temps:
        temps[0].write_text(strict_json(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        temps[1].write_text(markdown(report), encoding="utf-8")
        if plots:
            plot_convergence(grid, report["smoothing_window"], report["target_loss"], temps[2])
            plot_sweep(report, temps[3])
    return out / "report.md"
