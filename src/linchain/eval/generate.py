"""The generate scorer: LLM-Adapters' protocol (Alpaca prompt, beam search, answer extraction)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import torch

from ..data.prompts import RESPONSE_MARKER
from ._torch import NonFiniteLogitsError, eval_mode, model_device
from .examples import build_prompt, gold_answer
from .extract import extract_answer, is_correct, response_text
from .tasks import TaskSpec

__all__ = ["GeneratePrediction", "generate_predict", "generate_texts"]


@dataclass
class GeneratePrediction:
    """One row scored by generation: raw ``output`` (new tokens, decoded), the extracted answer."""

    prompt: str
    output: str
    pred: Optional[str]
    gold: str
    correct: bool


@torch.no_grad()
def generate_texts(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    num_beams: int = 4,
    batch_size: int = 8,
    progress: bool = False,
) -> List[str]:
    """The decoded new tokens for each prompt (special tokens dropped).

    Batches are left-padded so that every row's new tokens start at the same column; ``generate``
    derives position ids from the attention mask, so padding does not change the result.
    Decoding is deterministic: beam search (``num_beams > 1``, LLM-Adapters' default of 4: its
    temperature/top_p/top_k are ignored there because sampling is off) or greedy (``1``).
    Rows are sorted by length so that a batch pads little.
    """
    if num_beams < 1 or batch_size < 1 or max_new_tokens < 1:
        raise ValueError(
            f"num_beams, batch_size and max_new_tokens must be >= 1, got {num_beams}, {batch_size}, {max_new_tokens}"
        )
    from transformers import LogitsProcessorList

    device = model_device(model)
    saved_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    outputs: List[str] = [""] * len(prompts)
    bar = None
    finite = _FiniteScores()
    if progress:
        from ..progress import Progress

        bar = Progress(total=len(prompts), desc=f"generate (beams={num_beams})", unit="row")
    try:
        with eval_mode(model):
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                enc = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt")
                out = model.generate(
                    input_ids=enc["input_ids"].to(device),
                    attention_mask=enc["attention_mask"].to(device),
                    max_new_tokens=max_new_tokens,
                    num_beams=num_beams,
                    do_sample=False,
                    pad_token_id=pad_id,
                    logits_processor=LogitsProcessorList([finite.at(batch, num_beams)]),
                )
                new = out[:, enc["input_ids"].shape[1] :]
                for i, text in zip(batch, tokenizer.batch_decode(new, skip_special_tokens=True)):
                    outputs[i] = text
                if bar is not None:
                    bar.update(len(batch))
    finally:
        tokenizer.padding_side = saved_side
        if bar is not None:
            bar.close()
    return outputs


class _FiniteScores:
    """A logits processor that stops generation at the first NaN or +inf score: beam search would
    go on decoding garbage (NaN never wins a comparison), and the garbage would be scored as answers.
    (-inf is legitimate there: processors such as min_length mask tokens with it.)"""

    def at(self, batch: Sequence[int], num_beams: int) -> "_FiniteScores":
        self.batch, self.num_beams = list(batch), num_beams
        return self

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        bad = torch.isnan(scores) | (scores == float("inf"))
        if bool(bad.any()):
            first = int(bad.any(dim=-1).nonzero()[0, 0]) // self.num_beams  # beams of a row are adjacent
            raise NonFiniteLogitsError(self.batch[first])
        return scores


def generate_predict(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: Sequence[Any],
    task: TaskSpec,
    num_beams: int = 4,
    batch_size: int = 8,
    max_new_tokens: Optional[int] = None,
    faithful_prompt: bool = False,
    append_choices: bool = True,
    progress: bool = False,
) -> List[GeneratePrediction]:
    """Generate a response per row, extract the answer with the task's rule and judge it.

    ``max_new_tokens`` defaults to the task's (32 commonsense, 256 math).
    """
    prompts = [build_prompt(ex, task, faithful_prompt, append_choices) for ex in examples]
    texts = generate_texts(
        model,
        tokenizer,
        prompts,
        max_new_tokens or task.max_new_tokens,
        num_beams=num_beams,
        batch_size=batch_size,
        progress=progress,
    )
    out = []
    for ex, prompt, text in zip(examples, prompts, texts):
        options = getattr(ex, "options", None) or list(getattr(ex, "target_scores", None) or [])
        answer = response_text(text, RESPONSE_MARKER)
        pred = extract_answer(task, answer, options or None)
        gold = gold_answer(ex)
        scores = getattr(ex, "target_scores", None)
        if scores and pred is not None:
            correct = scores.get(pred, 0) >= max(scores.values())
        else:
            correct = is_correct(task, pred, gold)
        out.append(GeneratePrediction(prompt, text, pred, gold, correct))
    return out
