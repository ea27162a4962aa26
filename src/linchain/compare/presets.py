"""Named grids of ``linchain compare`` (``--preset NAME``): option values under ``--config`` and flags.

Data paths are read in place from the LLM-Adapters folder: ``$LINCHAIN_DATA_DIR``, else the first
``shared/data/llm-adapters`` found in the current folder or one above it.

``paper-commonsense``: the paper's commonsense setting as far as the shared data allows: the four
training files present (boolq, ARC-Easy, ARC-Challenge, openbookqa; commonsense_170k itself is not
in the shared folder), the six test sets present, the paper's scorer (4-beam generation), MoSLoRA's
recipe (r 16, alpha 32, 3 epochs, batch 16 = 4 x 4, cutoff 256, 100 warm-up steps, loss on prompt
and response) with the reference rate 3e-4 swept a factor ~3 each way, 3 seeds. A GPU job.

``paper-math``: math_10k (``ft-training_set/math_data.json``) -> the arithmetic test sets present
(gsm8k, AddSub, MultiArith, SingleEq, AQuA, mathqa) with the generate scorer; the reference's
arithmetic script otherwise (k 3, r 16, alpha 32, 3 epochs, batch 16, cutoff 256). A GPU job.

``cpu-study``: sized to finish in about 2.5 hours on 2 idle CPU cores with SmolLM2-135M
(``--model_name_or_path smollm2``). Choices:

- Task: the three 4-option tasks with training files (ARC-Easy, ARC-Challenge, openbookqa;
  "the correct answer is answerN"), trained together and tested on their own test sets (the first
  150 rows of each). Their label priors are nearly flat (the majority label is 26-28% of each full
  test set), so accuracy well above ~30% is more than a label prior. BoolQ is left out: in the
  quality benchmark its 62% "true" prior made every run flip between ~25% and ~77% with the seed.
- Methods lora, moslora, linchain-k3, linchain-k3-frozen (the control), lora-2r (fewer
  parameters); rates 1e-3 (it learned in the 30-300-step quality runs) and 3e-3 (a short run, and
  the chain's smaller initial gain, may want more); 2 seeds (the statistics pair rows, so test
  rows buy power more cheaply than seeds; 2 seeds show whether seeds agree).
- Arithmetic. Costs on 2 idle cores, 2 threads: a step of 8 of these rows (~110 tokens each,
  ~870 non-padding tokens a step) t_step ~= 4.5 s (BENCHMARKS.md: 3.66 s/step for the quality
  preset's 4-task mix, scaled up for these longer rows); a loglik test row t_row ~= 0.35 s with
  the model load (the quick quality re-run: 85 s for 240 rows). A 10-step, 2-method mini grid of
  this preset on the shared machine (load 3.4-4.6, 1 thread) measured 11.6 s/step and 0.6 s/row:
  so expect 1.5-2.5x longer there.
  Trainings: 5 methods x (2 rates + 1 more seed) = 15 x 100 steps x 4.5 s = 6,750 s;
  validation: 10 sweep runs x 150 rows x 0.35 s = 525 s; test: (10 runs + base) x 450 rows x
  0.35 s = 1,730 s; effective rank and extra model loads ~230 s. Total ~9,240 s ~= 2.6 h.
- Resolution: a paired difference of ~6 points (task-averaged) is detectable with 80% power at
  450 rows x 2 seeds if the methods disagree on ~40% of the rows; smaller differences will read
  "no detectable difference". 100 steps x 8 = 800 training rows (~10% of an epoch) is short:
  if the first-seed sweep shows the methods near the label prior, a longer run with 1 seed
  (``--seeds 0 --max_steps 150``: the same 1,500 training steps, 6 test scorings instead of 11)
  resolves more.

``gpu-study``: the cpu-study's question on one GPU in bf16 mixed precision, larger: 200 steps of 16
rows (3,200 training rows, 4x the cpu-study), three rates (1e-3, 3e-3, 1e-2), three seeds, 300
validation rows, the first 500 test rows of each task (1,500). `benchmarks/gpu_compare.sh` runs it
as parallel processes (one per method and rate, then one per method and seed) that share the output
folder, then writes the report with ``--report_only``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

__all__ = ["PRESETS", "data_dir", "preset_values"]

_REL = Path("shared") / "data" / "llm-adapters"
_COMMONSENSE_TRAIN = ("boolq", "ARC-Easy", "ARC-Challenge", "openbookqa")
_COMMONSENSE_TEST = ("boolq", "piqa", "social_i_qa", "ARC-Easy", "ARC-Challenge", "openbookqa")
_MATH_TEST = ("gsm8k", "AddSub", "MultiArith", "SingleEq", "AQuA", "mathqa")
_STUDY_TASKS = ("ARC-Easy", "ARC-Challenge", "openbookqa")
_PAPER_METHODS = "lora,moslora,linchain-k3,linchain-k3-frozen,lora-2r"


def data_dir() -> Path:
    """The LLM-Adapters folder: $LINCHAIN_DATA_DIR, else shared/data/llm-adapters here or in a parent folder."""
    env = os.environ.get("LINCHAIN_DATA_DIR")
    if env:
        return Path(env)
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / _REL).is_dir():
            return folder / _REL
    raise FileNotFoundError(f"--preset: no {_REL} folder in {here} or above it; set LINCHAIN_DATA_DIR to the LLM-Adapters data folder")


def _paper_commonsense(d: Path) -> dict[str, Any]:
    return {
        "data": [str(d / t / "train.json") for t in _COMMONSENSE_TRAIN],
        "eval_data": [str(d / t / "test.json") for t in _COMMONSENSE_TEST],
        "scorer": "generate", "methods": _PAPER_METHODS, "baseline": "lora", "seeds": "0,1,2",
        "learning_rates": "1e-4,3e-4,1e-3", "max_steps": -1, "num_train_epochs": 3,
        "per_device_train_batch_size": 4, "gradient_accumulation_steps": 4, "warmup_steps": 100, "cutoff_len": 256,
        "train_on_inputs": True, "r": 16, "alpha": 32, "validation_size": 500,
    }


def _paper_math(d: Path) -> dict[str, Any]:
    return {
        "data": [str(d / "ft-training_set" / "math_data.json")],
        "eval_data": [str(d / t / "test.json") for t in _MATH_TEST],
        "scorer": "generate", "methods": _PAPER_METHODS, "baseline": "lora", "seeds": "0,1,2",
        "learning_rates": "1e-4,3e-4,1e-3", "max_steps": -1, "num_train_epochs": 3,
        "per_device_train_batch_size": 4, "gradient_accumulation_steps": 4, "warmup_steps": 100, "cutoff_len": 256,
        "train_on_inputs": True, "r": 16, "alpha": 32, "validation_size": 120, "validation_task": "gsm8k",
    }


def _cpu_study(d: Path) -> dict[str, Any]:
    return {
        "model_name_or_path": "smollm2",
        "data": [str(d / t / "train.json") for t in _STUDY_TASKS],
        "eval_data": [str(d / t / "test.json") for t in _STUDY_TASKS],
        "eval_limit": 150, "scorer": "loglik", "methods": _PAPER_METHODS, "baseline": "lora", "seeds": "0,1",
        "learning_rates": "1e-3,3e-3", "max_steps": 100, "warmup_steps": 10, "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2, "cutoff_len": 256, "r": 16, "alpha": 32, "validation_size": 150,
        "per_device_eval_batch_size": 8, "save_steps": 25, "save_total_limit": 1, "num_threads": 2,
    }


def _gpu_study(d: Path) -> dict[str, Any]:
    return {**_cpu_study(d), "eval_limit": 500, "seeds": "0,1,2", "learning_rates": "1e-3,3e-3,1e-2", "max_steps": 200,
            "warmup_steps": 20, "per_device_train_batch_size": 16, "gradient_accumulation_steps": 1, "validation_size": 300,
            "per_device_eval_batch_size": 32, "save_steps": 50, "bf16": True, "num_threads": 1}


#: name -> function of the data folder giving option values
PRESETS = {"paper-commonsense": _paper_commonsense, "paper-math": _paper_math, "cpu-study": _cpu_study, "gpu-study": _gpu_study}


def preset_values(name: str, folder: Optional[Path] = None) -> dict[str, Any]:
    """The option values of preset ``name`` (keys are option names of ``linchain compare``)."""
    if name not in PRESETS:
        raise ValueError(f"--preset={name!r}: use one of {', '.join(PRESETS)}")
    return PRESETS[name](folder or data_dir())
