"""From examples to training sequences: mixing, the train/validation split, tokenization.

The prompt is :func:`linchain.data.format_prompt`, the one constant evaluation uses too.
"""

from __future__ import annotations

import random
from typing import Any, Optional, Sequence

import torch

from ..data import Example, format_prompt

__all__ = ["SequenceDataset", "closed_options", "default_val_set_size", "split_examples", "tokenize_example"]


#: the default held-out share and cap (the reference holds out 120 rows)
VAL_FRACTION, VAL_MAX = 0.2, 120


def default_val_set_size(n_rows: int) -> int:
    """20% of the rows, at most 120: fits a 30-row file as well as a 170k-row one."""
    return min(VAL_MAX, int(n_rows * VAL_FRACTION))


def split_examples(examples: Sequence[Example], val_set_size: int, seed: int) -> tuple[list[Example], list[Example]]:
    """Shuffle with ``random.Random(seed)`` and hold out the first ``val_set_size`` rows.

    Deterministic for a seed, independent of torch's RNG (so changing the model never changes the
    split). Validation rows whose prompt also occurs among the training rows (generators and
    scraped datasets repeat questions) are moved to training, so held-out numbers stay held out.
    """
    if val_set_size >= len(examples):
        raise ValueError(
            f"--val_set_size={val_set_size} leaves no training rows out of {len(examples)}; use at most "
            f"{len(examples) - 1}, or leave it unset (20% of the rows, at most {VAL_MAX})"
        )
    order = list(examples)
    random.Random(seed).shuffle(order)
    val, train = order[:val_set_size], order[val_set_size:]
    seen = {(e.instruction, e.input) for e in train}
    clean = [e for e in val if (e.instruction, e.input) not in seen]
    train += [e for e in val if (e.instruction, e.input) in seen]
    return train, clean


def closed_options(examples: Sequence[Example], max_options: int) -> Optional[list[str]]:
    """The sorted set of distinct answers when it is small (a closed-label task), else None."""
    answers = sorted({e.answer for e in examples if e.answer})
    return answers if 2 <= len(answers) <= max_options else None


def tokenize_example(
    tokenizer: Any, example: Example, cutoff_len: int, train_on_inputs: bool, faithful: bool = False
) -> dict[str, list[int]]:
    """``input_ids``/``labels`` (length <= cutoff_len) for prompt + output + EOS, and
    ``has_answer``: whether any token of the output survived the cut.

    The EOS token is appended only when the sequence fits (as LLM-Adapters does), so a truncated
    sequence never teaches the model to stop mid-answer. With ``train_on_inputs=False`` the prompt
    positions get label -100 (no loss).
    """
    prompt = format_prompt(example.instruction, example.input, faithful=faithful)
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    full_ids = tokenizer(prompt + example.output, add_special_tokens=True)["input_ids"][:cutoff_len]
    if (
        len(full_ids) < cutoff_len
        and tokenizer.eos_token_id is not None
        and (not full_ids or full_ids[-1] != tokenizer.eos_token_id)
    ):
        full_ids = full_ids + [tokenizer.eos_token_id]
    labels = list(full_ids)
    has_answer = len(full_ids) > len(prompt_ids)
    if not train_on_inputs:
        n_prompt = min(len(prompt_ids), len(labels))
        labels[:n_prompt] = [-100] * n_prompt
    return {"input_ids": full_ids, "labels": labels, "has_answer": has_answer}


class SequenceDataset(torch.utils.data.Dataset):
    """Pre-tokenized examples; items are dicts of int lists, padded by the collator."""

    def __init__(
        self,
        tokenizer: Any,
        examples: Sequence[Example],
        cutoff_len: int,
        train_on_inputs: bool,
        faithful: bool = False,
    ):
        self.items = [tokenize_example(tokenizer, e, cutoff_len, train_on_inputs, faithful) for e in examples]
        #: rows whose answer lies wholly past cutoff_len: no answer token is trained on
        self.answer_cut = [e for e, item in zip(examples, self.items) if not item.pop("has_answer")]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return self.items[index]
