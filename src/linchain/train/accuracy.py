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

__all__ = ["mc_accuracy", "option_logprobs"]


@torch.no_grad()
def option_logprobs(model: torch.nn.Module, prompt_ids: list[int], option_ids: list[list[int]]) -> list[float]:
    """Sum of log p(option tokens | prompt) for each option of one prompt.

    The prompt runs once ([1, L]) and its KV cache is repeated for the n options, which then run
    together right-padded ([n, T]): the cost is about one forward pass of the prompt, not n. The
    prompt's last logits score each option's first token; the option's position j - 1 scores its
    token j.
    """
    device = next(model.parameters()).device
    n, width = len(option_ids), max(map(len, option_ids))
    prompt = torch.tensor([prompt_ids], device=device)
    out = model(input_ids=prompt, use_cache=True)
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)  # [V]
    scores = [first[o[0]].item() for o in option_ids]
    if width == 1:
        return scores
    cache = out.past_key_values
    cache.batch_repeat_interleave(n)
    ids = torch.zeros((n, width), dtype=torch.long, device=device)
    mask = torch.zeros((n, len(prompt_ids) + width), dtype=torch.long, device=device)
    mask[:, : len(prompt_ids)] = 1
    for i, o in enumerate(option_ids):
        ids[i, : len(o)] = torch.tensor(o)
        mask[i, len(prompt_ids) : len(prompt_ids) + len(o)] = 1
    logprobs = torch.log_softmax(model(input_ids=ids, attention_mask=mask, past_key_values=cache).logits.float(), dim=-1)
    for i, o in enumerate(option_ids):
        for j in range(1, len(o)):
            scores[i] += logprobs[i, j - 1, o[j]].item()
    return scores


def mc_accuracy(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: Sequence[Example],
    options: Optional[Sequence[str]] = None,
    faithful: bool = False,
) -> float:
    """Fraction of ``examples`` whose gold answer gets the highest option log-likelihood.

    ``options`` is the shared closed set of answers; an example's own ``options`` take precedence.
    The model is put in eval mode (no dropout) and restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        correct = 0
        for example in examples:
            choices = list(example.options or options or [])
            if not choices:
                raise ValueError(f"{example.source} row {example.row}: no options to score")
            prompt = tokenizer(format_prompt(example.instruction, example.input, faithful=faithful), add_special_tokens=True)["input_ids"]
            scores = option_logprobs(model, prompt, [tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices])
            correct += choices[max(range(len(choices)), key=scores.__getitem__)] == example.answer
        return correct / len(examples)
    finally:
        model.train(was_training)
