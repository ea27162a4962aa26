"""Cheap held-out accuracy for training runs: multiple choice by log-likelihood.

Each option is scored by the summed log-probability of its tokens after the prompt (the training
prompt, so the model sees exactly what it was trained on); the best option is the prediction. The prompt
runs once per example (its KV cache is shared by the options), no decoding loop. The full
evaluation protocol (generation, answer extraction) is ``linchain eval``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from ..data import Example, format_prompt
from ..eval._torch import eval_mode
from ..eval.loglik import shared_prompts_logprobs

__all__ = ["mc_accuracy"]


def mc_accuracy(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: Sequence[Example],
    options: Optional[Sequence[str]] = None,
    faithful: bool = False,
    progress: Optional[str] = None,
    batch_size: int = 64,
) -> float:
    """Fraction of ``examples`` whose gold answer gets the highest option log-likelihood.

    ``options`` is the shared closed set of answers; an example's own ``options`` take precedence.
    The model is put in eval mode (no dropout) and restored afterwards. ``progress``: a label
    for a progress bar on stderr (None: no bar). ``batch_size``: (prompt, option) pairs a pass.
    """
    prompts, choice_lists = [], []
    for example in examples:
        choices = list(example.options or options or [])
        if not choices:
            raise ValueError(f"{example.source} row {example.row}: no options to score")
        prompts.append(format_prompt(example.instruction, example.input, faithful=faithful))
        choice_lists.append(choices)
    with eval_mode(model):
        # each prompt runs once, its KV cache shared by the options, several rows a pass (linchain eval's scorer)
        scored = shared_prompts_logprobs(
            model, tokenizer, prompts, choice_lists, batch_size=batch_size, progress=progress or False
        )
    correct = 0
    for example, choices, row in zip(examples, choice_lists, scored):
        scores = [total for total, _ in row]
        correct += choices[max(range(len(choices)), key=scores.__getitem__)] == example.answer
    return correct / len(examples)
