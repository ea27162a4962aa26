"""One task, one scorer: score the rows and collect the prediction records."""

from __future__ import annotations

import sys
import time
from typing import Any, Optional, Sequence

import torch

from ._torch import NonFiniteLogitsError
from .examples import candidate_answers, gold_answer
from .extract import extract_answer, is_correct
from .generate import generate_predict
from .loglik import loglik_predict
from .results import TaskResult
from .tasks import TaskSpec

__all__ = ["SCORERS", "evaluate_task", "gold_can_match"]

SCORERS = ("generate", "loglik")


def gold_can_match(task: TaskSpec, example: Any, scorer: str) -> bool:
    """Whether any prediction could be judged correct against this row's gold answer: the gold
    text must survive the task's own answer extraction (generate) or be a candidate (loglik)."""
    gold = gold_answer(example)
    if scorer == "loglik":
        return any(c.strip().lower() == gold.lower() for c in candidate_answers(task, example))
    options = getattr(example, "options", None)
    return bool(gold) and is_correct(task, extract_answer(task, gold, options), gold)


def refuse_unmatchable(task: TaskSpec, examples: Sequence[Any], scorer: str, data: str, advice: str) -> list:
    """The rows of ``examples`` whose gold answer can never match ``task``'s rule; a ValueError when that is
    every row: each would count as wrong and the accuracy would read 0% as if it were a result (another
    task's rule, e.g. boolq rows scored as ARC). Some such rows are counted and said (:func:`evaluate_task`)."""
    try:
        unmatchable = [ex for ex in examples if not gold_can_match(task, ex, scorer)]
    except ValueError:
        return []  # the rule takes its candidates from the data when scoring (closed sets): checked there
    if not examples or len(unmatchable) < len(examples):
        return unmatchable
    first = examples[0]
    raise ValueError(
        f"{data}: none of its {len(examples)} gold answers can match the {task.name} rule (e.g. row "
        f"{getattr(first, 'row', 0)}: {gold_answer(first)!r}), so every row would count as wrong; {advice}"
    )


def evaluate_task(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: Sequence[Any],
    task: TaskSpec,
    scorer: str,
    data: str,
    batch_size: int = 8,
    num_beams: int = 4,
    max_new_tokens: Optional[int] = None,
    normalize: str = "sum",
    share_prompt: bool = True,
    faithful_prompt: bool = False,
    append_choices: bool = True,
    task_inferred: bool = False,
    progress: bool = False,
) -> TaskResult:
    """Score ``examples`` with ``scorer`` ("generate" or "loglik") and return the result with one
    prediction record per row: the prompt, raw output (generate) or candidate scores (loglik),
    the extracted answer, the gold answer and whether it is correct."""
    if scorer not in SCORERS:
        raise ValueError(f"scorer must be one of {SCORERS}, got {scorer!r}")
    unmatchable = refuse_unmatchable(
        task, examples, scorer, data, "pass the --task of these rows (e.g. closed, boolq or gsm8k)"
    )
    start = time.perf_counter()
    try:
        records = _score(
            model,
            tokenizer,
            examples,
            task,
            scorer,
            data,
            batch_size,
            num_beams,
            max_new_tokens,
            normalize,
            share_prompt,
            faithful_prompt,
            append_choices,
            progress,
        )
    except NonFiniteLogitsError as err:
        row = getattr(examples[err.index], "row", err.index)
        raise ValueError(
            f"{data} row {row}: the model's {err.what} are not finite (NaN or inf) while scoring; "
            "the weights overflow (a diverged or corrupted adapter?), so no accuracy is reported"
        ) from None
    if unmatchable:
        first = unmatchable[0]
        print(
            f"linchain eval: {task.name} ({data}): {len(unmatchable)} of {len(examples)} gold answers can never match "
            f"under {task.name!r}'s rule (e.g. row {first.row}: {gold_answer(first)!r}); they count as wrong",
            file=sys.stderr,
        )
    return TaskResult(
        task=task.name,
        data=data,
        scorer=scorer,
        total=len(records),
        unmatchable_gold=len(unmatchable),
        correct=sum(r["correct"] for r in records),
        no_answer=sum(r["pred"] is None for r in records),
        seconds=round(time.perf_counter() - start, 3),
        task_inferred=task_inferred,
        predictions=records,
    )


def _score(
    model,
    tokenizer,
    examples,
    task,
    scorer,
    data,
    batch_size,
    num_beams,
    max_new_tokens,
    normalize,
    share_prompt,
    faithful_prompt,
    append_choices,
    progress,
) -> list:
    """One prediction record per row."""
    records = []
    if scorer == "generate":
        preds = generate_predict(
            model,
            tokenizer,
            examples,
            task,
            num_beams=num_beams,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            faithful_prompt=faithful_prompt,
            append_choices=append_choices,
            progress=progress,
        )
        for ex, p in zip(examples, preds):
            records.append(
                {
                    "task": task.name,
                    "data": data,
                    "row": ex.row,
                    "scorer": scorer,
                    "prompt": p.prompt,
                    "output": p.output,
                    "pred": p.pred,
                    "gold": p.gold,
                    "correct": p.correct,
                }
            )
    else:
        preds = loglik_predict(
            model,
            tokenizer,
            examples,
            task,
            batch_size=batch_size,
            normalize=normalize,
            share_prompt=share_prompt,
            faithful_prompt=faithful_prompt,
            append_choices=append_choices,
            progress=progress,
        )
        for ex, p in zip(examples, preds):
            records.append(
                {
                    "task": task.name,
                    "data": data,
                    "row": ex.row,
                    "scorer": scorer,
                    "prompt": p.prompt,
                    "output": p.continuations[p.candidates.index(p.pred)],
                    "candidates": p.candidates,
                    "scores": p.scores,
                    "pred": p.pred,
                    "gold": p.gold,
                    "correct": p.correct,
                }
            )
    return records
