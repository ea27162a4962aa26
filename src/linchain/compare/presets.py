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
(``--model_name_or_path smollm2``), on a task that the model demonstrably learns at this scale.

- Task: reasoning-gym ``family_relationships`` (``make demo``'s task; the package installs from
  PyPI): "What relation is Liam to Jennifer? Answer with a single word." over a closed set of ~12
  answers (son, wife, mother-in-law, ...; the most frequent is 13.5% of the test rows). Training
  rows: the generator's rows 0-2999 (seed 0), of which 150 are carved off for validation; test rows:
  600 rows drawn with seed 100000 (row i uses seed + i, so no test row is a training row). Scored
  by log-likelihood over the closed set (``--eval_task closed``). Measured: the base model scores
  6.3%, LoRA 50.2% after 80 steps of 8 rows.
- Why not ARC/openbookqa (the first version of this preset): after 100 steps of 8 rows (CPU) and 200
  steps of 16 rows (GPU, every method and rate), every run's training loss settled at 0.198-0.207,
  which is ln 4 / 7: the response "the correct answer is answerN" is 7 tokens, six learned exactly
  and the last one (the answer) at a uniform guess over 4 options. Validation accuracy stayed at
  chance (17.9-28.4%, 150-300 rows). SmolLM2-135M does not learn those tasks in such runs, so no
  method can be told apart there (BENCHMARKS.md).
- Methods lora, moslora, linchain-k3, linchain-k3-frozen (the control), lora-2r (fewer
  parameters); rates 1e-3, 3e-3 and 1e-2 (at 1e-3 and 3e-3 alone every method chose 3e-3, the top
  of the range, so the range was extended); one seed: the statistics pair test rows (McNemar's test
  for one seed), and 600 rows buy more power than seeds at this cost. ``--seeds 0,1,2`` adds seeds
  later (about 2 more hours) and reuses everything finished.
- Cost on 2 idle cores (2 threads), measured: a training run of 80 steps ~5 min, scoring its 150
  validation rows ~2 min, 600 test rows ~7.7 min (log-likelihood over 12 answers, ~0.77 s a row).
  15 sweep runs ~105 min + 5 tests and the base model ~46 min: ~2.5 h.
- Resolution: with one seed, a paired difference of ~4-5 points on 600 rows is detectable with 80%
  power (the report prints the exact figure per comparison); smaller ones read "no detectable
  difference".

``cpu-math``: the paper's arithmetic claim at CPU scale (issue 20), sized like cpu-study.

- Task: reasoning-gym ``chain_sum`` with one-digit terms, two or three of them ("State the final
  answer to the following arithmetic problem: 4 - 1 - 8 ="; answers -18..27), scored by greedy
  generation (``--num_beams 1 --max_new_tokens 6``) with the paper's number rule. The generator's
  default (up to 4-digit terms, up to 6 of them) is out of reach for a 135M model in 80 steps.
  Training rows 0-2999 (seed 0, 1,454 distinct problems), 150 carved off for validation; 1,800 test
  rows drawn with seed 100000, of which those repeating a training prompt (about two thirds: there
  are only ~4,200 distinct problems) are dropped (``--test_unseen_only``), leaving ~600 scored.
- Measured (pilot, 2 busy cores, 200 test rows): the base model scores 10.0% (18 rows with no
  number), the most frequent answer is 8.0% of the rows, LoRA (r 16, lr 3e-3, 80 steps of 8 rows)
  45.0%: the model learns the task at this scale, with room above and below.
- Methods lora, dora (PEFT's DoRA), moslora, linchain-k3 and its two other mixer initialisations
  (-orthogonal, -identity); rates 1e-3, 3e-3, 1e-2; one seed (``--seeds 0,1,2`` adds seeds later).
- Cost on 2 cores, measured in the pilot: a training run of 80 steps ~4.7 min, 200 rows scored by
  greedy generation ~40 s (model load included). 18 sweep runs ~85 min, their validation ~10 min,
  6 tests of ~600 rows and the base model ~15 min: ~1.8 h.

``gpu-math``: cpu-math's twin for a lent GPU: 200 steps of 16 rows from 8,000 generated, 300
validation rows, 4,500 test rows drawn (~1,700 unseen in training), three seeds, bf16 (as gpu-study is to
cpu-study).

``gpu-study``: the cpu-study's question on one GPU in bf16 mixed precision, larger: 200 steps of 16
rows (3,200 training rows, 5x the cpu-study) from 8,000 generated, three rates (1e-3, 3e-3, 1e-2),
three seeds, 300 validation rows, 1,500 test rows, scored 512 (prompt, candidate) pairs a pass
(about 40 rows). ``benchmarks/gpu_compare.sh`` runs it as parallel
processes (one per method and rate, then one per method and seed) that share the output folder,
then writes the report with ``--report_only``.
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
_STUDY_TASK = "family_relationships"
_STUDY_TEST_SEED = 100000  # row i of a reasoning-gym generator uses seed + i: far above the training rows
_PAPER_METHODS = "lora,moslora,linchain-k3,linchain-k3-frozen,lora-2r"
_MATH_TASK = "chain_sum"
_MATH_OPTIONS = "?min_digits=1&max_digits=1&min_terms=2&max_terms=3"  # one-digit terms, two or three
_MATH_METHODS = "lora,dora,moslora,linchain-k3,linchain-k3-orthogonal,linchain-k3-identity"


def data_dir() -> Path:
    """The LLM-Adapters folder: $LINCHAIN_DATA_DIR, else shared/data/llm-adapters here or in a parent folder."""
    env = os.environ.get("LINCHAIN_DATA_DIR")
    if env:
        return Path(env)
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / _REL).is_dir():
            return folder / _REL
    raise FileNotFoundError(
        f"--preset: no {_REL} folder in {here} or above it; set LINCHAIN_DATA_DIR to the LLM-Adapters data folder"
    )


def _paper_commonsense(d: Path) -> dict[str, Any]:
    return {
        "data": [str(d / t / "train.json") for t in _COMMONSENSE_TRAIN],
        "eval_data": [str(d / t / "test.json") for t in _COMMONSENSE_TEST],
        "scorer": "generate",
        "methods": _PAPER_METHODS,
        "baseline": "lora",
        "seeds": "0,1,2",
        "learning_rates": "1e-4,3e-4,1e-3",
        "max_steps": -1,
        "num_train_epochs": 3,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 4,
        "warmup_steps": 100,
        "cutoff_len": 256,
        "train_on_inputs": True,
        "r": 16,
        "alpha": 32,
        "validation_size": 500,
    }


def _paper_math(d: Path) -> dict[str, Any]:
    return {
        "data": [str(d / "ft-training_set" / "math_data.json")],
        "eval_data": [str(d / t / "test.json") for t in _MATH_TEST],
        "scorer": "generate",
        "methods": _PAPER_METHODS,
        "baseline": "lora",
        "seeds": "0,1,2",
        "learning_rates": "1e-4,3e-4,1e-3",
        "max_steps": -1,
        "num_train_epochs": 3,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 4,
        "warmup_steps": 100,
        "cutoff_len": 256,
        "train_on_inputs": True,
        "r": 16,
        "alpha": 32,
        "validation_size": 120,
        "validation_task": "gsm8k",
    }


def _cpu_study(d: Optional[Path]) -> dict[str, Any]:
    return {
        "model_name_or_path": "smollm2",
        "data": [f"reasoning_gym:{_STUDY_TASK}:3000"],
        "validation_size": 150,
        "validation_task": "closed",
        "eval_data": [f"reasoning_gym:{_STUDY_TASK}:600:{_STUDY_TEST_SEED}"],
        "eval_task": ["closed"],
        "scorer": "loglik",
        "methods": _PAPER_METHODS,
        "baseline": "lora",
        "seeds": "0",
        "learning_rates": "1e-3,3e-3,1e-2",
        "max_steps": 80,
        "warmup_steps": 8,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "cutoff_len": 256,
        "r": 16,
        "alpha": 32,
        "per_device_eval_batch_size": 8,
        "save_steps": 20,
        "save_total_limit": 1,
        "num_threads": 2,
        # measured: none of the 600 test rows repeats a training prompt, so the study's test set stays as it was made
        "test_unseen_only": False,
    }


def _gpu_study(d: Optional[Path]) -> dict[str, Any]:
    return {
        **_cpu_study(d),
        "data": [f"reasoning_gym:{_STUDY_TASK}:8000"],
        "validation_size": 300,
        "eval_data": [f"reasoning_gym:{_STUDY_TASK}:1500:{_STUDY_TEST_SEED}"],
        "seeds": "0,1,2",
        "max_steps": 200,
        "warmup_steps": 20,
        "per_device_train_batch_size": 16,
        "gradient_accumulation_steps": 1,
        "per_device_eval_batch_size": 512,
        "save_steps": 50,
        "bf16": True,
        "num_threads": 1,
    }


def _cpu_math(d: Optional[Path]) -> dict[str, Any]:
    test = f"reasoning_gym:{_MATH_TASK}:1800:{_STUDY_TEST_SEED}{_MATH_OPTIONS}"
    return {
        "model_name_or_path": "smollm2",
        "data": [f"reasoning_gym:{_MATH_TASK}:3000{_MATH_OPTIONS}"],
        "validation_size": 150,
        "validation_task": test,
        "eval_data": [test],
        "eval_task": [test],
        "scorer": "generate",
        "num_beams": 1,
        "max_new_tokens": 6,
        "methods": _MATH_METHODS,
        "baseline": "lora",
        "seeds": "0",
        "learning_rates": "1e-3,3e-3,1e-2",
        "max_steps": 80,
        "warmup_steps": 8,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "cutoff_len": 128,
        "r": 16,
        "alpha": 32,
        "per_device_eval_batch_size": 16,
        "save_steps": 20,
        "save_total_limit": 1,
        "num_threads": 2,
    }


def _gpu_math(d: Optional[Path]) -> dict[str, Any]:
    test = f"reasoning_gym:{_MATH_TASK}:4500:{_STUDY_TEST_SEED}{_MATH_OPTIONS}"
    return {
        **_cpu_math(d),
        "data": [f"reasoning_gym:{_MATH_TASK}:8000{_MATH_OPTIONS}"],
        "validation_size": 300,
        "validation_task": test,
        "eval_data": [test],
        "eval_task": [test],
        "seeds": "0,1,2",
        "max_steps": 200,
        "warmup_steps": 20,
        "per_device_train_batch_size": 16,
        "gradient_accumulation_steps": 1,
        "per_device_eval_batch_size": 256,
        "save_steps": 50,
        "bf16": True,
        "num_threads": 1,
    }


#: name -> function of the data folder giving option values
PRESETS = {
    "paper-commonsense": _paper_commonsense,
    "paper-math": _paper_math,
    "cpu-study": _cpu_study,
    "gpu-study": _gpu_study,
    "cpu-math": _cpu_math,
    "gpu-math": _gpu_math,
}
_FILES = ("paper-commonsense", "paper-math")  # the presets that read the LLM-Adapters folder


def preset_values(name: str, folder: Optional[Path] = None) -> dict[str, Any]:
    """The option values of preset ``name`` (keys are option names of ``linchain compare``)."""
    if name not in PRESETS:
        raise ValueError(f"--preset={name!r}: use one of {', '.join(PRESETS)}")
    if folder is None and name in _FILES:
        folder = data_dir()
    return PRESETS[name](folder)
