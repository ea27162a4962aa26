"""``linchain compare``'s own options; the shared training settings are ``linchain train``'s dataclasses."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from ..eval.scoring import SCORERS
from .methods import parse_methods

__all__ = ["CompareArguments", "float_list", "int_list"]


def _items(flag: str, text: str, kind, what: str) -> list:
    example = "0,1,2" if kind is int else "3e-4,1e-3"
    if text is None or text == "":
        return []  # not given: the training flag's one value (--seed, --learning_rate)
    items = [x.strip() for x in str(text).split(",")]
    if not any(items) or not all(items):  # "", " ", "0,,1", "0,": an empty item is a typo, not a value to skip
        raise ValueError(f"--{flag}={text!r}: expected comma-separated {what} with none empty, e.g. {example}")
    try:
        values = [kind(x) for x in items]
    except ValueError:
        raise ValueError(f"--{flag}={text!r}: expected comma-separated {what}, e.g. {example}") from None
    if len(set(values)) != len(values):
        raise ValueError(f"--{flag}={text!r} repeats a value")
    return values


def int_list(flag: str, text: str) -> list[int]:
    values = _items(flag, text, int, "integers")
    if any(v < 0 or v > 2**32 - 1 for v in values):
        raise ValueError(f"--{flag}={text!r}: seeds must be between 0 and 4294967295 (2**32 - 1)")
    return values


def float_list(flag: str, text: str) -> list[float]:
    values = _items(flag, text, float, "numbers")
    if any(not (v > 0 and math.isfinite(v)) for v in values):
        raise ValueError(f"--{flag}={text!r}: learning rates must be finite and > 0")
    return values


@dataclass
class CompareArguments:
    """The grid (methods x learning rates x seeds), the test data and the statistics."""

    methods: str = field(
        default="lora,moslora,linchain-k3",
        metadata={
            "help": "Comma-separated methods: lora, moslora, linchain (k = --num_mixers), linchain-kK, lora-2r, peft-lora, "
            "dora, pissa, rslora (PEFT's LoRA variants), full; suffixes of the chains, in this order: -bias, -orthogonal, "
            "-identity (mixer init), -frozen (mixers frozen at initialisation)."
        },
    )
    baseline: str = field(
        default="lora", metadata={"help": "The method every other one is compared with (one of --methods)."}
    )
    seeds: str = field(
        default="",
        metadata={"help": "Comma-separated seeds (default: --seed). The first one sweeps the learning rates."},
    )
    learning_rates: str = field(
        default="",
        metadata={
            "help": "Comma-separated learning rates swept per method on the validation split (default: --learning_rate alone)."
        },
    )
    eval_data: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Test data specs (repeatable), e.g. ../shared/data/llm-adapters/ARC-Easy/test.json. Never trained on."
        },
    )
    eval_task: list[str] = field(
        default_factory=list,
        metadata={"help": "Answer rules per --eval_data, in order (default: inferred from the path)."},
    )
    eval_limit: Optional[int] = field(
        default=None, metadata={"help": "Score the first N rows of each --eval_data (the same rows for every run)."}
    )
    scorer: str = field(
        default="loglik",
        metadata={"help": "loglik (rank the answer labels; cheap on CPU) or generate (the paper's beam search)."},
    )
    num_beams: int = field(
        default=4, metadata={"help": "Beam width of --scorer generate (4 = LLM-Adapters; 1 = greedy)."}
    )
    max_new_tokens: Optional[int] = field(
        default=None,
        metadata={"help": "Generation budget of --scorer generate (default per task: 32 commonsense, 256 math)."},
    )
    validation_size: int = field(
        default=200,
        metadata={
            "help": "Rows carved from the training data (seed 0) to choose each method's learning rate; never trained on."
        },
    )
    validation_task: Optional[str] = field(
        default=None,
        metadata={
            "help": "Answer rules of the validation rows when they cannot be inferred from the training file names."
        },
    )
    test_unseen_only: bool = field(
        default=True,
        metadata={
            "help": "Drop test rows whose prompt is also a training prompt (counted in the report), so the test measures "
            "what was learned, not what was seen; false keeps every row (as studies made before this option did)."
        },
    )
    eval_base: bool = field(
        default=True, metadata={"help": "Also score the base model without fine-tuning (the floor)."}
    )
    target_loss: Optional[float] = field(
        default=None,
        metadata={
            "help": "Training loss for steps-to-target (default: the baseline's smoothed final loss, mean over seeds)."
        },
    )
    sweep_only: bool = field(
        default=False,
        metadata={
            "help": "Stop after the learning-rate sweep (first seed, each rate scored on the validation rows, also a "
            "single rate): no test scores, no further seeds. For splitting a grid across processes or machines."
        },
    )
    report_only: bool = field(
        default=False,
        metadata={
            "help": "Train and score nothing: write the report from the finished steps in --output_dir (a study still "
            "running, or parts of one run in parallel); the steps not run yet are listed."
        },
    )
    n_resamples: int = field(
        default=10000, metadata={"help": "Bootstrap and randomisation draws of the paired statistics."}
    )
    preset: Optional[str] = field(
        default=None,
        metadata={
            "help": "paper-commonsense, paper-math, cpu-study or gpu-study: fills in data, methods, rates, seeds and sizes; flags and --config override it."
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.eval_data, str):
            self.eval_data = [self.eval_data]
        if isinstance(self.eval_task, str):
            self.eval_task = [self.eval_task]
        specs = parse_methods(self.methods)
        if self.baseline not in [s.name for s in specs]:
            raise ValueError(f"--baseline={self.baseline!r} is not in --methods ({self.methods})")
        int_list("seeds", self.seeds)
        float_list("learning_rates", self.learning_rates)
        if not self.eval_data:
            raise ValueError("--eval_data is required: at least one test data spec (or a --preset)")
        if self.eval_task and len(self.eval_task) != len(self.eval_data):
            raise ValueError(
                f"--eval_task: give one per --eval_data or none; got {len(self.eval_task)} for {len(self.eval_data)}"
            )
        # answer rules are checked here, before any training: an unknown one would fail every scoring step later
        from ..eval.tasks import get_task

        for flag, names in (
            ("--eval_task", self.eval_task),
            ("--validation_task", [self.validation_task] if self.validation_task else []),
        ):
            for name in names:
                try:
                    get_task(name)
                except ValueError as err:
                    raise ValueError(f"{flag}: {err}") from None
        if not isinstance(self.num_beams, int) or isinstance(self.num_beams, bool) or self.num_beams < 1:
            raise ValueError(f"--num_beams={self.num_beams!r}: must be an integer >= 1")
        if self.max_new_tokens is not None and (not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1):
            raise ValueError(f"--max_new_tokens={self.max_new_tokens!r}: must be an integer >= 1")
        if self.scorer not in SCORERS:
            raise ValueError(f"--scorer={self.scorer!r}: use one of {', '.join(SCORERS)}")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ValueError(f"--eval_limit={self.eval_limit}: must be >= 1 or unset")
        if self.validation_size < 0:
            raise ValueError(f"--validation_size={self.validation_size}: must be >= 0")
        if self.sweep_only and self.report_only:
            raise ValueError("--sweep_only and --report_only: choose one (--report_only runs nothing)")
        if self.sweep_only and self.validation_size == 0:
            raise ValueError(
                "--sweep_only needs --validation_size > 0: the sweep scores each rate on the validation rows"
            )
        if self.target_loss is not None and not (math.isfinite(self.target_loss) and self.target_loss > 0):
            raise ValueError(
                f"--target_loss={self.target_loss!r}: must be a finite loss > 0, or unset (the baseline's)"
            )
        if self.n_resamples < 100:
            raise ValueError(f"--n_resamples={self.n_resamples}: use at least 100 (10000 for reported numbers)")
