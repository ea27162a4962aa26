"""Quality benchmark: a thin wrapper over ``linchain compare`` (linchain.compare) keeping the grids
of the first quality runs (issue #5) reproducible.

    python benchmarks/quality.py --preset quick     # lora, moslora, linchain-k3; 2 seeds; 30 steps; 40 rows per test set
    python benchmarks/quality.py --preset full      # 10 methods, 3 seeds, 300 steps, 200 rows per test set (~12 h on 2 cores)
    python benchmarks/quality.py --preset quick --methods lora,linchain-k3 --seeds 0 --max_steps 20 --num_threads 1

Any other ``linchain compare`` flag overrides the preset (``--output_dir``, ``--eval_limit``,
``--max_train_samples``, ``--learning_rates`` ...); ``--data_dir`` names the LLM-Adapters folder.
New studies should use ``linchain compare --preset cpu-study`` (a tuned learning rate per method,
a frozen-mixer control, paired statistics) rather than these single-rate grids.

The grids, as the original script ran them: training rows drawn by the seed from boolq + ARC-Easy +
ARC-Challenge + openbookqa ``train.json`` together (no validation split: one learning rate, 1e-3,
for every method), r 16, alpha 32 (lora-2r: 32 and 64), 8 sequences per step (4 x 2), cutoff 256,
10% warm-up, the loglik scorer on the first N rows of six test sets (the four plus social_i_qa and piqa).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

TRAIN_TASKS = ("boolq", "ARC-Easy", "ARC-Challenge", "openbookqa")
EVAL_TASKS = ("boolq", "ARC-Easy", "ARC-Challenge", "openbookqa", "social_i_qa", "piqa")
FULL_METHODS = (
    "lora,moslora,linchain-k2,linchain-k3,linchain-k4,linchain-k2-bias,linchain-k3-bias,linchain-k4-bias,lora-2r"
)
#: preset -> (methods, seeds, max_steps, training rows, test rows per task)
PRESETS = {"quick": ("lora,moslora,linchain-k3", "0,1", 30, 240, 40), "full": (FULL_METHODS, "0,1,2", 300, 2400, 200)}


def preset_options(name: str, data_dir: Path) -> dict[str, Any]:
    """``linchain compare`` option values of the quick / full grid."""
    methods, seeds, steps, rows, limit = PRESETS[name]
    return {
        "model_name_or_path": "smollm2",
        "methods": methods,
        "baseline": "lora",
        "seeds": seeds,
        "learning_rate": 1e-3,
        "data": [str(data_dir / t / "train.json") for t in TRAIN_TASKS],
        "validation_size": 0,
        "max_train_samples": rows,
        "eval_data": [str(data_dir / t / "test.json") for t in EVAL_TASKS],
        "eval_limit": limit,
        "scorer": "loglik",
        "max_steps": steps,
        "warmup_steps": max(1, round(0.1 * steps)),
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "cutoff_len": 256,
        "r": 16,
        "alpha": 32,
        "save_steps": max(1, steps // 4),
        "save_total_limit": 1,
        "output_dir": f"runs/quality-{name}",
    }


def compare_argv(argv: Sequence[str], folder: Path) -> list[str]:
    """``linchain compare`` arguments for this script's ``argv`` (the preset written to ``folder``/preset.yaml)."""
    import yaml

    from linchain.cli.args import _pop_flag
    from linchain.compare.presets import data_dir

    argv = list(argv)
    preset, argv = _pop_flag(argv, "--preset", "quick or full")
    directory, argv = _pop_flag(argv, "--data_dir", "the LLM-Adapters data folder")
    if (preset or "quick") not in PRESETS:
        raise SystemExit(
            f"benchmarks/quality.py: --preset={preset!r}: use quick or full (or linchain compare --preset ...)"
        )
    if "--config" in argv:
        raise SystemExit("benchmarks/quality.py: --config is not supported here; use linchain compare --config")
    config = folder / "preset.yaml"
    config.write_text(yaml.safe_dump(preset_options(preset or "quick", Path(directory) if directory else data_dir())))
    return ["--config", str(config), *argv]


def main(argv: Optional[Sequence[str]] = None) -> int:
    from linchain.cli.compare import main as compare_main

    with tempfile.TemporaryDirectory(prefix="linchain-quality-") as folder:
        return compare_main(compare_argv(sys.argv[1:] if argv is None else argv, Path(folder)))


if __name__ == "__main__":
    sys.exit(main())
