"""Answer extraction and judging, as LLM-Adapters' evaluators do it (see :mod:`.tasks`)."""

from __future__ import annotations

import math
import re
from typing import Optional, Sequence

from .tasks import TaskSpec

__all__ = ["NUMBER_RE", "extract_answer", "is_correct", "response_text"]

#: LLM-Adapters' number regex (after removing commas)
NUMBER_RE = re.compile(r"-?\d+\.?\d*")


def response_text(generated: str, marker: str = "### Response:") -> str:
    """The prediction text: what the model wrote after the prompt, up to a repeated marker.

    LLM-Adapters decodes prompt + output and keeps ``split(marker)[1].strip()``: the text between
    the prompt's marker and the next one. ``generated`` here is only the new tokens, so the
    same rule is: cut at the first marker, strip.
    """
    return generated.split(marker, 1)[0].strip()


def _first_option(text: str, options: Sequence[str]) -> Optional[str]:
    """The option whose text starts earliest in ``text`` (case-insensitive); the longest wins a
    tie so that "no" inside "not sure" cannot shadow a longer option starting at the same place."""
    lowered = text.lower()
    best = None
    for option in options:
        pos = lowered.find(option.strip().lower()) if option.strip() else -1
        if pos >= 0:
            key = (pos, -len(option))
            if best is None or key < best[0]:
                best = (key, option)
    return None if best is None else best[1]


def extract_answer(task: TaskSpec, text: str, options: Optional[Sequence[str]] = None) -> Optional[str]:
    """The answer found in ``text`` under ``task``'s rule, as a string; ``None`` when there is none.

    Numbers come back as the matched string (commas removed), e.g. ``"-3.5"``; judge them with
    :func:`is_correct`, which applies the tolerance.
    """
    if task.kind in ("label", "letter"):
        # first match, case-sensitive, as LLM-Adapters (re.findall(...)[0])
        match = re.search(task.pattern, text.strip())
        return match.group(0) if match else None
    if task.kind == "number":
        found = NUMBER_RE.findall(text.replace(",", ""))
        return found[-1] if found else None
    if task.kind == "option":
        if not options:
            raise ValueError(f"task {task.name!r} needs the example's options to extract an answer")
        return _first_option(text, options)
    raise ValueError(f"unknown task kind {task.kind!r}")


def is_correct(task: TaskSpec, pred: Optional[str], gold: str) -> bool:
    """Whether the extracted ``pred`` matches the gold answer (no answer is wrong)."""
    if pred is None:
        return False
    if task.kind == "number":
        try:
            # gold like "576.0" or "1,000"; float('inf') etc. are not numbers a model writes
            value, target = float(pred), float(str(gold).replace(",", ""))
        except ValueError:
            return False
        return math.isfinite(value) and abs(value - target) <= task.tolerance
    if task.kind == "option":
        return pred.strip().lower() == str(gold).strip().lower()
    return pred == str(gold).strip()
