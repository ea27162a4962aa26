"""Evaluation results: the per-task summary, ``results.json``, ``predictions.jsonl`` and the table."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..io import atomic_write_json, atomic_write_text, strict_json

__all__ = ["RESULTS_SCHEMA_VERSION", "TaskResult", "format_table", "results_dict", "write_results"]

RESULTS_SCHEMA_VERSION = 1


@dataclass
class TaskResult:
    """One task's score: ``accuracy = correct / total``; ``no_answer`` counts rows where the
    generate scorer found nothing to extract (always 0 for loglik)."""

    task: str
    data: str
    scorer: str
    total: int
    correct: int
    no_answer: int
    seconds: float
    #: rows whose gold answer this task's rule can never produce (empty, 'maybe' for boolq, 'forty'
    #: for gsm8k, not among the scored candidates): they count as wrong, and are reported
    unmatchable_gold: int = 0
    task_inferred: bool = False
    predictions: List[Dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def summary(self) -> Dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "predictions"}
        out["accuracy"] = self.accuracy
        return out


def results_dict(
    results: Sequence[TaskResult],
    *,
    model: str,
    adapter: Optional[str],
    scorer: str,
    settings: Dict[str, Any],
    environment: Dict[str, Any],
) -> Dict[str, Any]:
    """The content of ``results.json``; ``average`` is the unweighted mean of task accuracies
    (the paper's "Avg." column), ``None`` for a single task."""
    accuracies = [r.accuracy for r in results]
    return {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "model": model,
        "adapter": adapter,
        "scorer": scorer,
        "settings": settings,
        "environment": environment,
        "tasks": [r.summary() for r in results],
        "average": sum(accuracies) / len(accuracies) if len(accuracies) > 1 else None,
    }


def write_results(output_dir: str | os.PathLike, payload: Dict[str, Any], results: Sequence[TaskResult]) -> Path:
    """Write ``results.json`` and ``predictions.jsonl`` (one line per row and task) atomically."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = [strict_json(p, ensure_ascii=False) for r in results for p in r.predictions]
    atomic_write_text(out / "predictions.jsonl", "\n".join(lines) + ("\n" if lines else ""))
    atomic_write_json(out / "results.json", payload)
    return out / "results.json"


def format_table(results: Sequence[TaskResult]) -> str:
    """A plain-text table: task, scorer, rows, correct, no answer, accuracy (%), and the average."""
    header = ("task", "scorer", "rows", "correct", "no answer", "accuracy")
    body = [
        (r.task, r.scorer, str(r.total), str(r.correct), str(r.no_answer), f"{100 * r.accuracy:.1f}%") for r in results
    ]
    if len(results) > 1:
        avg = sum(r.accuracy for r in results) / len(results)
        body.append(
            (
                "average",
                "",
                str(sum(r.total for r in results)),
                str(sum(r.correct for r in results)),
                str(sum(r.no_answer for r in results)),
                f"{100 * avg:.1f}%",
            )
        )
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    rule = "-" * len(fmt(header))
    lines = [fmt(header), rule, *(fmt(row) for row in body[: len(results)])]
    if len(results) > 1:
        lines += [rule, fmt(body[-1])]
    return "\n".join(lines)
