"""Evaluation tasks: which answer rule, which generation length, and inferring the task from a path.

The rules follow LLM-Adapters' evaluators (``commonsense_evaluate.py`` / ``evaluate.py``), see
``shared/reference/linchain-facts.md``:

* commonsense (``kind="label"``): the FIRST match of a fixed regex, compared as a string with
  the gold ``answer`` (case-sensitive, as there);
* arithmetic (``kind="number"``): commas removed, the LAST match of ``-?\\d+\\.?\\d*``, correct
  when ``|pred - gold| <= 1e-3``; no number is wrong;
* AQuA / mathqa (``kind="letter"``): the FIRST capital letter A-E anywhere in the text;
* BIG-bench / other multiple-choice sources (``kind="option"``): the option text that occurs
  first in the output (the options come with each example).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

__all__ = [
    "COMMONSENSE_TASKS",
    "MATH_TASKS",
    "CLOSED_TASK",
    "MAX_CLOSED_ANSWERS",
    "TASKS",
    "TaskSpec",
    "get_task",
    "infer_task",
    "rule_from_answers",
]

#: max_new_tokens of LLM-Adapters' evaluators
COMMONSENSE_MAX_NEW_TOKENS = 32
MATH_MAX_NEW_TOKENS = 256


@dataclass(frozen=True)
class TaskSpec:
    """How one task's generated text is turned into an answer and judged.

    Attributes:
        name: task name as given on the command line (``boolq``, ``gsm8k``, ``bigbench``...).
        kind: ``"label"`` (first regex match), ``"number"`` (last number, tolerance),
            ``"letter"`` (first A-E) or ``"option"`` (first option text found).
        pattern: the regex of ``label``/``letter`` tasks; ``None`` otherwise.
        labels: the label set of ``label`` tasks, in order (what the log-likelihood scorer ranks
            when a row does not list its own options).
        max_new_tokens: the generation budget of the paper's protocol.
        tolerance: absolute tolerance of ``number`` tasks.
    """

    name: str
    kind: str
    pattern: Optional[str] = None
    labels: Tuple[str, ...] = ()
    max_new_tokens: int = COMMONSENSE_MAX_NEW_TOKENS
    tolerance: float = 1e-3

    @property
    def multiple_choice(self) -> bool:
        """Whether the log-likelihood scorer can rank a fixed set of candidates."""
        return self.kind in ("label", "option")


def _label_task(name: str, labels: Tuple[str, ...]) -> TaskSpec:
    # '|'.join of the literal labels is exactly LLM-Adapters' regex (e.g. r'true|false')
    return TaskSpec(name, "label", "|".join(re.escape(x) for x in labels), labels, COMMONSENSE_MAX_NEW_TOKENS)


_ANSWERS = tuple(f"answer{i}" for i in range(1, 6))

COMMONSENSE_TASKS: Dict[str, TaskSpec] = {
    "boolq": _label_task("boolq", ("true", "false")),
    "piqa": _label_task("piqa", ("solution1", "solution2")),
    "social_i_qa": _label_task("social_i_qa", _ANSWERS),
    "ARC-Easy": _label_task("ARC-Easy", _ANSWERS),
    "ARC-Challenge": _label_task("ARC-Challenge", _ANSWERS),
    "openbookqa": _label_task("openbookqa", _ANSWERS),
    "hellaswag": _label_task("hellaswag", tuple(f"ending{i}" for i in range(1, 5))),
    "winogrande": _label_task("winogrande", ("option1", "option2")),
}

MATH_TASKS: Dict[str, TaskSpec] = {
    **{
        n: TaskSpec(n, "number", max_new_tokens=MATH_MAX_NEW_TOKENS)
        for n in ("gsm8k", "AddSub", "MultiArith", "SingleEq", "SVAMP", "mawps")
    },
    **{n: TaskSpec(n, "letter", "A|B|C|D|E", tuple("ABCDE"), MATH_MAX_NEW_TOKENS) for n in ("AQuA", "mathqa")},
}

#: Multiple choice with per-example options (BIG-bench target_scores, hf: datasets with choices).
OPTION_TASK = TaskSpec("multiple_choice", "option", max_new_tokens=COMMONSENSE_MAX_NEW_TOKENS)

#: Closed-set answers without listed options (reasoning_gym:family_relationships: son, wife, ...): every
#: row is scored against the distinct gold answers of the rows scored with it (see run_evaluation).
CLOSED_TASK = TaskSpec("closed", "option", max_new_tokens=COMMONSENSE_MAX_NEW_TOKENS)
MAX_CLOSED_ANSWERS = 32

TASKS: Dict[str, TaskSpec] = {
    **COMMONSENSE_TASKS,
    **MATH_TASKS,
    OPTION_TASK.name: OPTION_TASK,
    CLOSED_TASK.name: CLOSED_TASK,
}

# lower-cased aliases, so `--task arc-easy` or `--task svamp` work; the canonical name is kept
_ALIASES = {name.lower(): name for name in TASKS}
_ALIASES.update(
    {
        "siqa": "social_i_qa",
        "social_iqa": "social_i_qa",
        "obqa": "openbookqa",
        "arc_easy": "ARC-Easy",
        "arc_challenge": "ARC-Challenge",
        "math_qa": "mathqa",
    }
)


def get_task(name: str) -> TaskSpec:
    """The task called ``name`` (case-insensitive; ``bigbench:*`` and ``hf:*`` are option tasks)."""
    if name.startswith(("bigbench:", "hf:")) or name == "bigbench":
        return TaskSpec(name, "option", max_new_tokens=COMMONSENSE_MAX_NEW_TOKENS)
    if name.startswith("reasoning_gym:"):
        # the generators used here (basic_arithmetic, chain_sum, gsm_symbolic) have numeric answers
        return TaskSpec(name, "number", max_new_tokens=MATH_MAX_NEW_TOKENS)
    canonical = _ALIASES.get(name.lower())
    if canonical is None:
        shown = name if len(name) <= 80 else name[:80] + "..."  # a name is echoed, never a whole pasted text
        raise ValueError(f"unknown task {shown!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[canonical]


def infer_task(data: str) -> Optional[str]:
    """Guess the task from a data spec: the folder or file stem of an LLM-Adapters path
    (``.../boolq/test.json`` -> ``boolq``), or ``bigbench:TASK`` / ``hf:NAME``. ``None`` when
    the spec does not say (``reasoning_gym:`` generators answer with numbers, words or lists alike):
    the caller then infers the rule from the answers (:func:`rule_from_answers`)."""
    if data.startswith(("bigbench:", "hf:")):
        return data
    if data.startswith("reasoning_gym:"):
        return None
    path = Path(data)
    # the most specific part first: the file stem (gsm8k.json), then the parent folders
    for part in [path.stem, *reversed(path.parent.parts)]:
        canonical = _ALIASES.get(part.lower())
        if canonical is not None and canonical != OPTION_TASK.name:
            return canonical
    return None


#: a gold answer the number rule can judge: one number, commas as thousands separators allowed
_NUMBER = re.compile(r"-?\d+(\.\d*)?")


def rule_from_answers(data: str, answers: list[str], with_options: bool = False) -> TaskSpec:
    """The answer rule that the gold ``answers`` of ``data`` (every row, not only ``--limit``) call for.

    Rows that list their own options -> the option rule; every answer a number -> the number rule;
    a small closed set (2 to :data:`MAX_CLOSED_ANSWERS` distinct answers, each seen at least twice
    on average, none empty) -> closed-set scoring; anything else is refused, asking for ``--task``:
    a guessed rule that can never match the answers would score 0% as if it were a result.
    """
    if with_options:
        return TaskSpec(data, "option", max_new_tokens=COMMONSENSE_MAX_NEW_TOKENS)
    answers = [a.strip() for a in answers]
    if answers and all(_NUMBER.fullmatch(a.replace(",", "")) for a in answers):
        return TaskSpec(data, "number", max_new_tokens=MATH_MAX_NEW_TOKENS)
    distinct = sorted(set(answers))
    if "" not in distinct and 2 <= len(distinct) <= MAX_CLOSED_ANSWERS and 2 * len(distinct) <= len(answers):
        return CLOSED_TASK
    sample = ", ".join(repr(a[:40]) for a in distinct[:3])
    raise ValueError(
        f"--data {data}: cannot infer an answer rule from its {len(answers)} gold answers (not all numbers, "
        f"and {len(distinct)} distinct ones are no small closed set; e.g. {sample}); pass --task "
        f"(e.g. --task closed, gsm8k or boolq)"
    )
