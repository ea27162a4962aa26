"""Evaluation rows: loading a data spec, and each row's gold answer and candidate answers.

Loading goes through :func:`linchain.data.load_examples` (LLM-Adapters JSON/JSONL, ``bigbench:``,
``reasoning_gym:``, ``hf:``), whose errors name the source, the row and the problem.
"""

from __future__ import annotations

import re
from typing import Any, List, Mapping, Optional

from ..data import Example, format_prompt, load_examples
from .tasks import TaskSpec

__all__ = ["build_prompt", "candidate_answers", "continuation", "gold_answer", "load_eval_examples"]

_FORMAT_RE = re.compile(r"Answer format:\s*([A-Za-z0-9_]+(?:/[A-Za-z0-9_]+)+)")


def load_eval_examples(
    spec: str,
    limit: Optional[int] = None,
    split: str = "test",
    skip_malformed: bool = False,
    columns: Optional[Mapping[str, str]] = None,
) -> List[Example]:
    """The first ``limit`` rows of ``spec`` (all when ``None``), in file order, so that every
    scorer and every run with the same ``limit`` sees the same rows. ``split`` applies to
    ``hf:`` specs (evaluation defaults to ``test``)."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    examples = load_examples(spec, skip_malformed=skip_malformed, split=split, columns=columns)
    return list(examples if limit is None else examples[:limit])


def gold_answer(example: Any) -> str:
    """The gold answer: the highest-scoring option when the row has target scores."""
    scores = getattr(example, "target_scores", None)
    if scores:
        return max(scores, key=scores.get)
    return str(example.answer).strip()


def candidate_answers(task: TaskSpec, example: Any) -> List[str]:
    """The answers the loglik scorer ranks for this row.

    Rows with their own options (BIG-bench) use them; LLM-Adapters rows list theirs in the
    instruction ("Answer format: answer1/answer2/answer3"), which is better than the task's
    full label set because ARC rows have 3, 4 or 5 answers. Otherwise the task's labels.
    """
    options = getattr(example, "options", None)
    if options:
        return list(options)
    scores = getattr(example, "target_scores", None)
    if scores:
        return list(scores)
    if task.kind == "label":
        match = _FORMAT_RE.search(example.instruction)
        if match:
            found = [x for x in match.group(1).split("/") if x in task.labels]
            if len(found) >= 2:
                return found
        return list(task.labels)
    raise ValueError(f"task {task.name!r} ({task.kind}) has no fixed candidates: use --scorer generate")


def continuation(task: TaskSpec, answer: str) -> str:
    """The response text whose likelihood stands for ``answer``.

    LLM-Adapters' commonsense targets read "the correct answer is answer1", so that is what an
    adapter trained on them assigns probability to; option tasks score the option text itself.
    """
    if task.kind == "label":
        return f"the correct answer is {answer}"
    return answer


def build_prompt(example: Any, task: TaskSpec, faithful: bool = False, append_choices: bool = True) -> str:
    """The Alpaca prompt of a row, the same for both scorers.

    For option tasks (BIG-bench) the choices are appended to the instruction in BIG-bench's own
    format ("\n  choice: X" per option, its ``append_choices_to_input`` default), so a generating
    model can see what to answer; ``append_choices=False`` leaves the instruction as it is.
    LLM-Adapters rows already list their answers in the instruction.
    """
    instruction = example.instruction
    options = getattr(example, "options", None) or list(getattr(example, "target_scores", None) or [])
    if task.kind == "option" and append_choices and options:
        instruction = instruction.rstrip() + "".join(f"\n  choice: {o}" for o in options)
    return format_prompt(instruction, example.input, faithful=faithful)
