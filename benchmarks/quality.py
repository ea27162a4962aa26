"""Quality benchmark (issue #5): LoRA vs MoSLoRA vs LinChain on the LLM-Adapters commonsense tasks.

    python benchmarks/quality.py --preset quick            # LoRA, MoSLoRA, LinChain k=3; 2 seeds
    python benchmarks/quality.py --preset full             # the whole grid, 3 seeds (long, background)
    python benchmarks/quality.py --preset quick --methods lora,linchain-k3 --seeds 0 --max_steps 20

For every (method, seed) the script fine-tunes with ``linchain train``'s own function
(:func:`linchain.train.engine.run_training`) on a training subset of the four commonsense training
files (boolq, ARC-Easy, ARC-Challenge, openbookqa), then scores the saved adapter with ``linchain
eval``'s functions (:func:`load_causal_lm` + :func:`evaluate_task`, the loglik scorer by default) on
the first ``eval_limit`` rows of six test sets (the four plus social_i_qa and piqa: the same rows
for every run). Nothing is re-implemented: a run here is a ``linchain train`` run plus a ``linchain
eval`` run with the flags recorded in the results.

Outputs in ``--output_dir``: one folder per run (``<method>/seed<k>/{train,eval}``, plus ``base/``
for the model before fine-tuning), ``quality_results.json`` (every number), ``quality_results.md``
(the tables), ``convergence.png`` (training loss vs step, all methods) and the effective-rank
comparison of the LoRA and LinChain updates (``linchain analyze``'s functions, ``analysis/``).

Resumable: a finished run leaves ``run.json`` and is skipped next time; a run cut short resumes
from its newest complete checkpoint (``linchain train --resume``), so a long ``full`` run survives
interruption. Re-running with the same arguments only redoes what is missing, then the report.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

__all__ = [
    "EVAL_TASKS",
    "METHODS",
    "PRESETS",
    "TRAIN_TASKS",
    "MethodSpec",
    "Preset",
    "aggregate",
    "main",
    "markdown",
    "parse_args",
    "plot_convergence",
    "run_base",
    "run_one",
    "smooth",
    "steps_to_target",
]

ROOT = Path(__file__).resolve().parents[1]
#: The shared data folder, next to the repository (read in place, never copied into the repo).
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data" / "llm-adapters"
TRAIN_TASKS = ("boolq", "ARC-Easy", "ARC-Challenge", "openbookqa")
EVAL_TASKS = ("boolq", "ARC-Easy", "ARC-Challenge", "openbookqa", "social_i_qa", "piqa")
RUN_FILE = "run.json"  # written last: its presence marks a finished run


@dataclass(frozen=True)
class MethodSpec:
    """One row of the comparison: a ``linchain train --method`` with its chain shape and rank multiplier."""

    name: str
    method: str  # linchain train --method: lora (k=0), moslora (k=1) or linchain
    num_mixers: int
    mixer_bias: bool = False
    rank_mult: int = 1  # 2 = "LoRA at 2r" (alpha scaled too, so alpha / r, the update's scale, is unchanged)


METHODS: dict[str, MethodSpec] = {
    m.name: m
    for m in (
        MethodSpec("lora", "lora", 0),
        MethodSpec("moslora", "moslora", 1),
        *(MethodSpec(f"linchain-k{k}", "linchain", k) for k in (2, 3, 4)),
        *(MethodSpec(f"linchain-k{k}-bias", "linchain", k, mixer_bias=True) for k in (2, 3, 4)),
        MethodSpec("lora-2r", "lora", 0, rank_mult=2),
    )
}


@dataclass(frozen=True)
class Preset:
    """Sizes of a benchmark run; any of them can be overridden on the command line."""

    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    max_steps: int
    train_samples: int  # training rows drawn (by seed) from the four training files together
    eval_limit: int  # first N rows of each test set
    batch_size: int = 4  # micro-batch; x grad_accum = 8 sequences per optimizer step
    grad_accum: int = 2
    cutoff_len: int = 256  # the reference's cutoff


# quick: sized from a measured single step (~5 s per 8-sequence step on one thread while the machine
# was shared) to take about 30 minutes: 6 runs of ~5 minutes (30 steps, one pass over its 240 rows,
# then 6 x 40 test rows) plus the base model's evaluation. full: ~10x the steps and 5x the rows.
PRESETS: dict[str, Preset] = {
    "quick": Preset(methods=("lora", "moslora", "linchain-k3"), seeds=(0, 1), max_steps=30, train_samples=240, eval_limit=40),
    "full": Preset(methods=tuple(METHODS), seeds=(0, 1, 2), max_steps=300, train_samples=2400, eval_limit=200),
}


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/quality.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick", help="sizes and method grid (overridable below)")
    p.add_argument("--output_dir", default="runs/quality", help="where runs, results JSON/markdown and the plot go")
    p.add_argument("--model_name_or_path", default="smollm2", help="base model folder, or smollm2 (offline SmolLM2-135M-Instruct)")
    p.add_argument("--data_dir", default=str(DEFAULT_DATA_DIR), help="LLM-Adapters folder with <task>/train.json and <task>/test.json")
    p.add_argument("--methods", default=None, help=f"comma-separated subset of {', '.join(METHODS)}")
    p.add_argument("--seeds", default=None, help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--max_steps", type=int, default=None, help="optimizer steps per run")
    p.add_argument("--train_samples", type=int, default=None, help="training rows per run (a seeded draw from the four files)")
    p.add_argument("--eval_limit", type=int, default=None, help="first N rows of each test set (same rows for every run)")
    p.add_argument("--batch_size", type=int, default=None, help="micro-batch size")
    p.add_argument("--grad_accum", type=int, default=None, help="micro-batches per optimizer step")
    p.add_argument("--cutoff_len", type=int, default=None, help="maximum tokens per training sequence")
    p.add_argument("--r", type=int, default=16, help="adapter rank r (lora-2r uses 2r)")
    p.add_argument("--alpha", type=float, default=32.0, help="scaling numerator; the update is scaled by alpha / r")
    p.add_argument("--learning_rate", type=float, default=1e-3, help="peak learning rate, the same for every method")
    p.add_argument("--warmup_ratio", type=float, default=0.1, help="linear warm-up as a fraction of max_steps")
    p.add_argument("--target_modules", default="q_proj,k_proj,v_proj,up_proj,down_proj", help="modules to adapt")
    p.add_argument("--scorer", choices=("loglik", "generate"), default="loglik",
                   help="loglik ranks the answer labels (cheap on CPU); generate is the paper's 4-beam protocol")
    p.add_argument("--eval_batch_size", type=int, default=8, help="evaluation batch size")
    p.add_argument("--target_loss", type=float, default=None,
                   help="loss for steps-to-target (default: the smoothed loss LoRA reaches at the end, mean over seeds; "
                   "without LoRA, the highest such end loss among the methods)")
    p.add_argument("--no_base", action="store_true", help="skip evaluating the base model without fine-tuning")
    p.add_argument("--no_plot", action="store_true", help="skip convergence.png")
    p.add_argument("--num_threads", type=int, default=0,
                   help="torch CPU threads (0 = torch's default). On a shared, overloaded machine 1 thread was 2x faster "
                   "per step than 2 (no OpenMP threads waiting on each other)")
    args = p.parse_args(argv)
    preset = PRESETS[args.preset]
    # Command-line values override the preset's; the resolved values are what the results record.
    args.methods = tuple(m.strip() for m in args.methods.split(",") if m.strip()) if args.methods else preset.methods
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        p.error(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    args.seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else preset.seeds
    for name in ("max_steps", "train_samples", "eval_limit", "batch_size", "grad_accum", "cutoff_len"):
        if getattr(args, name) is None:
            setattr(args, name, getattr(preset, name))
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    return args


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments that change results (a resumed run is only reused when these match)."""
    keys = ("model_name_or_path", "data_dir", "max_steps", "train_samples", "eval_limit", "batch_size", "grad_accum",
            "cutoff_len", "r", "alpha", "learning_rate", "warmup_ratio", "target_modules", "scorer")
    # (num_threads and eval_batch_size change speed, not results, so runs made with others are reused.)
    return {k: getattr(args, k) for k in keys}


# --------------------------------------------------------------------------------------------
# One run: train (linchain train's function) then evaluate (linchain eval's functions)
# --------------------------------------------------------------------------------------------
def _say(message: str) -> None:
    print(f"[quality {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _cpu_seconds() -> float:
    # User + system CPU of this process (all threads): divided by the core count it estimates the
    # wall time on a quiet machine, which the shared machine's wall clock does not give.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _evaluate(args: argparse.Namespace, adapter: Optional[str], out: Path) -> dict[str, Any]:
    """Score an adapter (or the base model) on the first eval_limit rows of each test set."""
    import torch

    from linchain.eval import get_task, load_eval_examples
    from linchain.eval.loading import load_causal_lm
    from linchain.eval.results import results_dict, write_results
    from linchain.eval.runner import evaluate_task

    torch.manual_seed(0)
    model, tokenizer = load_causal_lm(args.model_name_or_path, adapter)
    results = []
    for name in EVAL_TASKS:
        data = str(Path(args.data_dir) / name / "test.json")
        examples = load_eval_examples(data, limit=args.eval_limit)
        results.append(evaluate_task(model, tokenizer, examples, get_task(name), args.scorer, data, batch_size=args.eval_batch_size))
        _say(f"  {name}: {results[-1].accuracy:.1%} of {results[-1].total} ({results[-1].seconds:.0f} s)")
    payload = results_dict(results, model=args.model_name_or_path, adapter=adapter, scorer=args.scorer,
                           settings={"limit": args.eval_limit, "per_device_eval_batch_size": args.eval_batch_size}, environment={})
    write_results(out, payload, results)  # results.json + predictions.jsonl, as `linchain eval` writes them
    return {r.task: {"accuracy": r.accuracy, "correct": r.correct, "total": r.total} for r in results}


def _finished(run_dir: Path, settings: dict[str, Any]) -> Optional[dict[str, Any]]:
    path = run_dir / RUN_FILE
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    if record.get("settings") != settings:
        raise SystemExit(f"{path} was made with other settings ({record.get('settings')}); "
                         f"use another --output_dir or delete that run")
    return record


def run_base(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """The base model's accuracy before any fine-tuning (a floor every method should beat)."""
    run_dir = out / "base"
    settings = _settings(args)
    done = _finished(run_dir, settings)
    if done:
        return done
    _say("base model, no fine-tuning")
    wall, cpu = time.time(), _cpu_seconds()
    accuracy = _evaluate(args, None, run_dir / "eval")
    record = {"method": "base", "seed": None, "settings": settings, "accuracy": accuracy,
              "eval_wall_s": round(time.time() - wall, 1), "eval_cpu_s": round(_cpu_seconds() - cpu, 1)}
    from linchain.io import atomic_write_text

    atomic_write_text(run_dir / RUN_FILE, json.dumps(record, indent=1) + "\n")
    return record


def run_one(args: argparse.Namespace, spec: MethodSpec, seed: int, out: Path) -> dict[str, Any]:
    """Train and evaluate one (method, seed), or return the record of an earlier finished run."""
    from linchain.io import atomic_write_text
    from linchain.train.args import DataArguments, LinChainTrainingArguments, ModelArguments
    from linchain.train.engine import ADAPTER_DIR, find_complete_checkpoint, run_training
    from linchain.train.outputs import METRICS_FILE, read_metrics

    run_dir = out / spec.name / f"seed{seed}"
    settings = _settings(args)
    done = _finished(run_dir, settings)
    if done:
        _say(f"{spec.name} seed {seed}: finished earlier, skipped")
        return done
    train_dir = run_dir / "train"
    resume = find_complete_checkpoint(train_dir) is not None
    _say(f"{spec.name} seed {seed}: training" + (" (resuming)" if resume else ""))
    r = args.r * spec.rank_mult
    model_args = ModelArguments(
        model_name_or_path=args.model_name_or_path, method=spec.method, num_mixers=spec.num_mixers, r=r,
        alpha=args.alpha * spec.rank_mult, mixer_bias=spec.mixer_bias, target_modules=args.target_modules,
    )
    data_args = DataArguments(
        data=[str(Path(args.data_dir) / t / "train.json") for t in TRAIN_TASKS],
        val_set_size=0,  # the test sets are the held-out data; no validation pass to pay for
        max_train_samples=args.train_samples, cutoff_len=args.cutoff_len, eval_accuracy="no",
    )
    # Checkpoints every quarter of the run (only the newest kept) make a killed run resumable.
    save_steps = max(1, args.max_steps // 4)
    train_args = LinChainTrainingArguments(
        output_dir=str(train_dir), resume=resume, max_steps=args.max_steps, learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=args.grad_accum,
        warmup_steps=max(1, round(args.warmup_ratio * args.max_steps)), logging_steps=1, eval_strategy="no",
        save_steps=save_steps, save_total_limit=1, report_to="none", disable_tqdm=True, seed=seed, data_seed=seed,
    )
    wall, cpu = time.time(), _cpu_seconds()
    result = run_training(model_args, data_args, train_args)
    if result.interrupted:
        raise KeyboardInterrupt(f"{spec.name} seed {seed} stopped at step {result.global_step}; run again to resume")
    train_wall, train_cpu = time.time() - wall, _cpu_seconds() - cpu
    _say(f"{spec.name} seed {seed}: {result.trainable_params:,} trainable parameters, trained in {train_wall:.0f} s; evaluating")
    wall, cpu = time.time(), _cpu_seconds()
    accuracy = _evaluate(args, str(train_dir / ADAPTER_DIR), run_dir / "eval")
    losses = [(rec["step"], rec["loss"]) for rec in read_metrics(train_dir / METRICS_FILE) if "loss" in rec]
    record = {
        "method": spec.name, "seed": seed, "spec": asdict(spec), "settings": settings,
        "trainable_params": result.trainable_params, "train_loss": result.train_loss, "losses": losses,
        "accuracy": accuracy, "adapter": str((train_dir / ADAPTER_DIR).relative_to(out)),
        "train_wall_s": round(train_wall, 1), "train_cpu_s": round(train_cpu, 1),
        "eval_wall_s": round(time.time() - wall, 1), "eval_cpu_s": round(_cpu_seconds() - cpu, 1),
        "loadavg_end": os.getloadavg()[0],
    }
    atomic_write_text(run_dir / RUN_FILE, json.dumps(record, indent=1) + "\n")
    return record


# --------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------
def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


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
    for step, loss in smooth(losses, window):
        if loss <= target:
            return step
    return None


def _verdict(a: tuple[float, float], b: tuple[float, float], rows: int, higher_is_better: bool = True) -> str:
    """'held' / 'did not hold' when the mean +- std intervals (over seeds) are apart AND the difference
    exceeds twice the binomial standard error of a difference of two accuracies over ``rows`` scored
    rows each; else inconclusive. With 2 seeds the seed std alone is itself very uncertain, and a
    few dozen rows per task give several points of sampling noise, so both must be cleared."""
    (ma, sa), (mb, sb) = a, b
    p = (ma + mb) / 2
    binomial_se = math.sqrt(2 * p * (1 - p) / rows) if rows else 0.0
    if abs(ma - mb) <= 2 * binomial_se:
        return "inconclusive within noise"
    if ma - sa > mb + sb:
        return "held" if higher_is_better else "did not hold"
    if ma + sa < mb - sb:
        return "did not hold" if higher_is_better else "held"
    return "inconclusive within noise"


def _effective_ranks(records: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    """Mean effective rank of each run's update (linchain analyze), and LoRA vs each LinChain, seed by seed."""
    from linchain.analysis import analyze_adapter, compare

    analyses = {}
    for rec in records:
        analyses[(rec["method"], rec["seed"])] = analyze_adapter(out / rec["adapter"], label=f"{rec['method']}-s{rec['seed']}")
    per_method: dict[str, list[float]] = {}
    for (method, _), a in analyses.items():
        per_method.setdefault(method, []).append(a.summary()["all"]["mean_effective_rank"])
    comparisons = []
    for (method, seed), a in sorted(analyses.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        base = analyses.get(("lora", seed))
        if method != "lora" and base is not None and METHODS[method].rank_mult == 1:
            c = compare(base, a)
            comparisons.append({k: c[k] for k in ("first", "second", "shared_layers", "second_higher", "second_lower",
                                                  "mean_diff_second_minus_first", "sign_test_p", "verdict")})
    return {"mean_effective_rank": {m: _mean_std(v) for m, v in per_method.items()}, "lora_vs": comparisons}


def aggregate(records: list[dict[str, Any]], base: Optional[dict[str, Any]], args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Per-method mean +- std per task and averaged, steps-to-target, parameters, effective rank, verdicts."""
    window = max(1, args.max_steps // 10)
    by_method: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_method.setdefault(rec["method"], []).append(rec)
    final_loss = {m: _mean_std([smooth(r["losses"], window)[-1][1] for r in rs]) for m, rs in by_method.items() if all(r["losses"] for r in rs)}
    target = args.target_loss
    if target is None and final_loss:
        # The paper's convergence claim: reaching LoRA's end-of-run loss in fewer steps. Without a
        # LoRA row, the worst method's end loss (a level every method reaches) stands in.
        target = final_loss["lora"][0] if "lora" in final_loss else max(m for m, _ in final_loss.values())
    methods: dict[str, Any] = {}
    for name, rs in by_method.items():
        per_task = {t: _mean_std([r["accuracy"][t]["accuracy"] for r in rs]) for t in EVAL_TASKS}
        average = _mean_std([statistics.fmean(r["accuracy"][t]["accuracy"] for t in EVAL_TASKS) for r in rs])
        steps = [steps_to_target(r["losses"], target, window) if target is not None else None for r in rs]
        methods[name] = {
            "seeds": [r["seed"] for r in rs], "trainable_params": rs[0]["trainable_params"], "per_task": per_task,
            "average": average, "final_loss": final_loss.get(name),
            "steps_to_target": steps,  # None = never reached within max_steps
            "train_wall_s": _mean_std([r["train_wall_s"] for r in rs]), "train_cpu_s": _mean_std([r["train_cpu_s"] for r in rs]),
            "eval_wall_s": _mean_std([r["eval_wall_s"] for r in rs]),
        }
    report: dict[str, Any] = {
        "settings": _settings(args), "methods_order": [m for m in METHODS if m in methods], "seeds": list(args.seeds),
        "eval_tasks": list(EVAL_TASKS), "train_tasks": list(TRAIN_TASKS), "smoothing_window": window,
        "target_loss": target, "methods": methods,
        "base": None if base is None else {"accuracy": base["accuracy"],
                                           "average": statistics.fmean(base["accuracy"][t]["accuracy"] for t in EVAL_TASKS)},
    }
    report["effective_rank"] = _effective_ranks(records, out) if records else {}
    # Automatic verdicts: mean +- std (over seeds) of the task-averaged accuracy, LinChain vs baselines.
    verdicts = {}
    for name in methods:
        # scored rows behind one method's average: every task's rows, every seed
        rows = sum(r["accuracy"][t]["total"] for r in by_method[name] for t in EVAL_TASKS)
        if name.startswith("linchain"):
            for other in ("lora", "moslora", "lora-2r"):
                if other in methods:
                    verdicts[f"{name} accuracy vs {other}"] = _verdict(methods[name]["average"], methods[other]["average"], rows)
    report["verdicts"] = verdicts
    return report


def _pm(ms: Optional[Sequence[float]], pct: bool = True) -> str:
    if ms is None:
        return "-"
    m, s = ms
    return f"{100 * m:.1f} ± {100 * s:.1f}" if pct else f"{m:.3f} ± {s:.3f}"


def markdown(report: dict[str, Any]) -> str:
    """The results as markdown tables (what goes into BENCHMARKS.md)."""
    order = report["methods_order"]
    methods = report["methods"]
    short = {"boolq": "BoolQ", "ARC-Easy": "ARC-e", "ARC-Challenge": "ARC-c", "openbookqa": "OBQA", "social_i_qa": "SIQA", "piqa": "PIQA"}
    lines = ["| method | params | " + " | ".join(short[t] for t in report["eval_tasks"]) + " | average |",
             "|---|---:|" + "---:|" * (len(report["eval_tasks"]) + 1)]
    if report.get("base"):
        acc = report["base"]["accuracy"]
        lines.append("| base (no fine-tuning) | 0 | " + " | ".join(f"{100 * acc[t]['accuracy']:.1f}" for t in report["eval_tasks"])
                     + f" | {100 * report['base']['average']:.1f} |")
    for name in order:
        m = methods[name]
        lines.append(f"| {name} | {m['trainable_params']:,} | " + " | ".join(_pm(m["per_task"][t]) for t in report["eval_tasks"])
                     + f" | **{_pm(m['average'])}** |")
    lines += ["", f"Accuracy in %, mean ± sample std over seeds {report['seeds']}.", "",
              f"| method | final train loss (smoothed, window {report['smoothing_window']}) | steps to loss "
              f"{report['target_loss']:.4f} per seed | mean effective rank of ΔW | train wall s | train CPU s |"
              if report["target_loss"] is not None else "| method | final loss | steps to target | eff. rank | train wall s | train CPU s |",
              "|---|---:|---:|---:|---:|---:|"]
    eranks = report.get("effective_rank", {}).get("mean_effective_rank", {})
    for name in order:
        m = methods[name]
        steps = ", ".join("never" if s is None else str(s) for s in m["steps_to_target"])
        lines.append(f"| {name} | {_pm(m['final_loss'], pct=False)} | {steps} | {_pm(eranks.get(name), pct=False)} | "
                     f"{m['train_wall_s'][0]:.0f} | {m['train_cpu_s'][0]:.0f} |")
    comps = report.get("effective_rank", {}).get("lora_vs", [])
    if comps:
        lines += ["", "Effective rank, layer by layer (`linchain analyze` compare, sign test):", ""]
        for c in comps:
            lines.append(f"- {c['second']} vs {c['first']}: higher in {c['second_higher']}/{c['shared_layers']} layers, "
                         f"mean difference {c['mean_diff_second_minus_first']:+.3f}, p = {c['sign_test_p']:.3g} ({c['verdict']})")
    if report["verdicts"]:
        lines += ["", "Automatic verdicts (task-averaged accuracy: mean ± std over seeds apart, and the difference over "
                  "2 binomial standard errors of the scored rows; else inconclusive):", ""]
        lines += [f"- {k}: {v}" for k, v in report["verdicts"].items()]
    return "\n".join(lines) + "\n"


def plot_convergence(records: list[dict[str, Any]], window: int, target: Optional[float], png: Path) -> Optional[Path]:
    """Training loss vs step, one line per method (smoothed mean over seeds, band = seed min..max)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on servers
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    by_method: dict[str, list[list[tuple[int, float]]]] = {}
    for rec in records:
        if rec["losses"]:
            by_method.setdefault(rec["method"], []).append(smooth(rec["losses"], window))
    for name in [m for m in METHODS if m in by_method]:
        curves = by_method[name]
        n = min(len(c) for c in curves)
        steps = [curves[0][i][0] for i in range(n)]
        values = [[c[i][1] for c in curves] for i in range(n)]
        line, = ax.plot(steps, [statistics.fmean(v) for v in values], label=f"{name} ({len(curves)} seeds)")
        ax.fill_between(steps, [min(v) for v in values], [max(v) for v in values], color=line.get_color(), alpha=0.15)
    if target is not None:
        ax.axhline(target, color="grey", linestyle=":", linewidth=1, label=f"target {target:.3f}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"training loss (moving average of {window})")
    ax.set_title("Convergence: LLM-Adapters commonsense training subset", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return png


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    import torch

    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    import linchain  # noqa: F401  (registers LINCHAIN with PEFT before any adapter is loaded)
    from linchain.io import atomic_write_text

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    started, load_start = time.time(), os.getloadavg()
    for task in TRAIN_TASKS:
        if not (Path(args.data_dir) / task / "train.json").exists():
            raise SystemExit(f"{args.data_dir}/{task}/train.json not found (set --data_dir)")
    base = None if args.no_base else run_base(args, out)
    records = [run_one(args, METHODS[m], seed, out) for m in args.methods for seed in args.seeds]
    report = aggregate(records, base, args, out)
    load_end = os.getloadavg()
    report["machine"] = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "loadavg_start": load_start, "loadavg_end": load_end,
                         "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    # Wall and CPU time of all runs (also the ones finished by an earlier, interrupted invocation).
    report["total"] = {
        "this_invocation_wall_s": round(time.time() - started, 1),
        "runs_wall_s": round(sum(r["train_wall_s"] + r["eval_wall_s"] for r in records) + (base["eval_wall_s"] if base else 0), 1),
        "runs_cpu_s": round(sum(r["train_cpu_s"] + r["eval_cpu_s"] for r in records) + (base["eval_cpu_s"] if base else 0), 1),
    }
    if not args.no_plot:
        png = plot_convergence(records, report["smoothing_window"], report["target_loss"], out / "convergence.png")
        report["convergence_plot"] = None if png is None else str(png)
    table = markdown(report)
    atomic_write_text(out / "quality_results.json", json.dumps(report, indent=1) + "\n")
    atomic_write_text(out / "quality_results.md", table)
    print(table)
    t = report["total"]
    print(f"wall {t['this_invocation_wall_s']:.0f} s this invocation; runs {t['runs_wall_s']:.0f} s wall, {t['runs_cpu_s']:.0f} s CPU; "
          f"load average {load_start[0]:.1f} -> {load_end[0]:.1f} on {os.cpu_count()} cores; wrote {out / 'quality_results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
