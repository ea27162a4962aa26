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
from ..eval.loglik import shared_prompt_logprobs

__all__ = ["mc_accuracy"]


def mc_accuracy(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: Sequence[Example],
    options: Optional[Sequence[str]] = None,
    faithful: bool = False,
    progress: Optional[str] = None,
) -> float:
    """Fraction of ``examples`` whose gold answer gets the highest option log-likelihood.

    ``options`` is the shared closed set of answers; an example's own ``options`` take precedence.
    The model is put in eval mode (no dropout) and restored afterwards. ``progress``: a label
    for a progress bar on stderr (None: no bar).
    """
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    try:
        correct = 0
        for example in tqdm(examples, desc=progress, disable=progress is None, unit="row", leave=False):
            choices = list(example.options or options or [])
            if not choices:
                raise ValueError(f"{example.source} row {example.row}: no options to score")
            prompt = format_prompt(example.instruction, example.input, faithful=faithful)
            # the prompt runs once, its KV cache shared by the options (linchain eval's scorer)
            scores = [total for total, _ in shared_prompt_logprobs(model, tokenizer, prompt, choices)]
            correct += choices[max(range(len(choices)), key=scores.__getitem__)] == example.answer
        return correct / len(examples)
    finally:
        model.train(was_training)
