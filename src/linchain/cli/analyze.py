"""``linchain analyze ADAPTER [ADAPTER2]``: spectra, effective and stable rank of adapter updates.

Reads adapter folders alone (no base model): LinChain adapters and PEFT LoRA adapters. Writes
``analysis.json`` and two PNGs to ``--out`` and prints a summary; with two adapters it compares
their effective ranks layer by layer.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from ..outputs import OutputFolder, run_of
from ..resolve import find_adapter_dir
from ..runs import ADAPTER, RunFolder
from ..threads import THREADS_HELP, check_num_threads, set_threads
from .args import parse, run_command

__all__ = ["AnalyzeArguments", "main"]


PROG = "linchain analyze"


@dataclass
class AnalyzeArguments:
    adapter: str = field(
        metadata={
            "help": "ADAPTER: folder written by save_pretrained (adapter_config.json + adapter_model.safetensors)."
        }
    )
    adapter2: Optional[str] = field(
        default=None, metadata={"help": "ADAPTER2: a second adapter folder to compare with the first."}
    )
    out: Optional[str] = field(
        default=None,
        metadata={
            "help": (
                "Output folder for analysis.json and the PNGs. Default: beside the first adapter, in its run folder "
                "(RUN/analysis for RUN/adapter), else ADAPTER-analysis."
            )
        },
    )
    labels: List[str] = field(
        default_factory=list, metadata={"help": "Names for the adapters in tables and plots (default: folder names)."}
    )
    max_sv: int = field(
        default=64, metadata={"help": "Singular values kept per layer in the JSON and plots.", "aliases": ["--max-sv"]}
    )
    no_plots: bool = field(default=False, metadata={"help": "Write the JSON only.", "aliases": ["--no-plots"]})
    overwrite: bool = field(default=False, metadata={"help": "Replace a non-empty --out folder (refused without it)."})
    num_threads: Optional[int] = field(default=None, metadata={"help": THREADS_HELP})

    def __post_init__(self) -> None:
        check_num_threads(self.num_threads, "--num_threads")


def _analyze(argv: list[str]) -> int:
    (args,) = parse(
        argv,
        (AnalyzeArguments,),
        PROG,
        positional=("adapter", "adapter2"),
        description=(
            "Singular values, effective rank (Roy & Vetterli 2007), stable rank and Frobenius norm of each "
            "adapted layer's update, for one adapter or two side by side (LinChain or PEFT LoRA folders)."
        ),
    )
    from ..analysis import analyze_adapter, compare, method_parameter_counts, plot_analysis

    paths = [p for p in (args.adapter, args.adapter2) if p]
    labels = list(args.labels or [])
    if len(labels) > len(paths):
        raise ValueError(f"--labels: {len(labels)} labels for {len(paths)} adapters")
    labels += [Path(p).resolve().name for p in paths[len(labels) :]]
    if len(paths) == 2 and labels[0] == labels[1]:
        labels = [f"{labels[0]} (1)", f"{labels[1]} (2)"]
    folders = [find_adapter_dir(p, flag=flag) for p, flag in zip(paths, ("ADAPTER", "ADAPTER2"))]
    if args.out is None:  # beside what it describes, not in whatever folder the command runs from
        first = Path(folders[0])
        args.out = str(
            RunFolder(first.parent).analysis if first.name == ADAPTER else first.with_name(first.name + "-analysis")
        )
    # the output is checked before any work: never over an adapter read, never over earlier results unasked
    out_folder = OutputFolder(
        args.out,
        "analyze",
        flag="--out",
        overwrite=args.overwrite,
        command=PROG,
        inputs={f"adapter {p}": f for p, f in zip(paths, folders)},
        runs={f"the run of adapter {p}": run_of(f) for p, f in zip(paths, folders)},
    )
    out_folder.check()
    set_threads(args.num_threads, PROG)  # after the checks: a wrong folder is answered at once
    analyses = [analyze_adapter(p, label=label, max_values=args.max_sv) for p, label in zip(folders, labels)]

    out = Path(args.out)
    first = analyses[0]
    report = {
        "adapters": [a.to_dict() for a in analyses],
        "parameter_counts_same_layers": method_parameter_counts([x.shape for x in first.layers], first.layers[0].r),
    }
    if len(analyses) == 2:
        report["comparison"] = compare(*analyses)
    with out_folder.replace_whole() as tmp:  # the JSON and the plots appear together
        (tmp / "analysis.json").write_text(json.dumps(report, indent=1))
        pngs = [out / p.name for p in ([] if args.no_plots else plot_analysis(analyses, tmp))]

    for a in analyses:
        s = a.summary()
        print(f"{a.label}: {a.method}, {len(a.layers)} layers, {a.total_params:,} trainable parameters")
        print(f"  {'module':<12} {'layers':>6} {'eff. rank':>10} {'stable rank':>12} {'||dW||_F':>10}")
        for name, row in [*s["by_module"].items(), ("all", s["all"])]:
            print(
                f"  {name:<12} {row['layers']:>6} {row['mean_effective_rank']:>10.3f} {row['mean_stable_rank']:>12.3f} "
                f"{row['mean_frobenius_norm']:>10.4g}"
            )
    if len(analyses) == 2:
        c = report["comparison"]
        print(
            f"effective rank, {c['second']} vs {c['first']} over {c['shared_layers']} shared layers: higher in "
            f"{c['second_higher']}, lower in {c['second_lower']}, mean difference {c['mean_diff_second_minus_first']:+.3f}, "
            f"sign test p = {c['sign_test_p']:.3g}: {c['verdict']}"
        )
    print("trainable parameters on these layers:")
    for method, n in report["parameter_counts_same_layers"].items():
        print(f"  {method:<26} {n:>12,}")
    print(f"wrote {out / 'analysis.json'}" + "".join(f", {p}" for p in pngs))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_command(PROG, lambda: _analyze(argv))


if __name__ == "__main__":
    sys.exit(main())
