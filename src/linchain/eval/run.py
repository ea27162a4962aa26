"""``run_evaluation``: the evaluation pipeline, the twin of :func:`linchain.train.run_training`.

tasks resolved (before any model is loaded) -> rows loaded -> model (+ adapter, optionally
merged) -> each task scored -> ``results.json`` and ``predictions.jsonl`` in ``output_dir``.
"""

from __future__ import annotations

import dataclasses

import datetime
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List

import torch

from ..io import OutputExistsError
from ..threads import set_threads
from .args import EvalArguments
from .examples import gold_answer, load_eval_examples
from .loading import load_causal_lm
from .results import TaskResult, format_table, results_dict, write_results
from .runner import evaluate_task
from .tasks import CLOSED_TASK, MAX_CLOSED_ANSWERS, TaskSpec, get_task, infer_task

__all__ = ["EvalRun", "run_evaluation"]

#: EvalArguments recorded under "settings" in results.json
_SETTINGS = ("num_beams", "max_new_tokens", "limit", "per_device_eval_batch_size", "normalize", "share_prompt",
             "faithful_prompt", "append_choices", "data_columns", "split", "dtype", "seed", "num_threads", "merge_adapter")


@dataclass
class EvalRun:
    """What :func:`run_evaluation` returns: one result per task, the results.json content, its path."""

    results: List[TaskResult]
    payload: Dict[str, Any]
    path: Path

    @property
    def average(self) -> float:
        """Unweighted mean of the task accuracies (the accuracy itself for one task)."""
        return sum(r.accuracy for r in self.results) / len(self.results)

    def table(self) -> str:
        return format_table(self.results)


def environment(device: str = "cpu") -> Dict[str, Any]:
    """Versions and machine (``device``: where the model scored), recorded with every result."""
    import peft
    import transformers

    import linchain

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "linchain": linchain.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
        "peft": peft.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "device": device, "cpu_threads": torch.get_num_threads(),
    }


def plan_tasks(args: EvalArguments) -> List[tuple[str, TaskSpec, bool]]:
    """``(data, task, inferred)`` per ``--data``; rejects what cannot be scored before a model loads."""
    plan = []
    for i, data in enumerate(args.data):
        inferred = not args.task
        name = args.task[i] if args.task else infer_task(data)
        if name is None:
            raise ValueError(f"--data {data}: cannot infer the task from the path; pass --task (e.g. --task boolq)")
        task = get_task(name)
        if inferred:
            print(f"linchain eval: task {task.name!r} inferred from {data}", file=sys.stderr)
        if args.scorer == "loglik" and not task.multiple_choice:
            raise ValueError(f"--scorer loglik needs multiple-choice tasks; {task.name!r} ({data}) is a "
                             f"{task.kind} task: use --scorer generate")
        plan.append((data, task, inferred))
    return plan


def closed_set(data: str, examples: list) -> list:
    """``--task closed``: each row's options are the sorted distinct gold answers of all the rows of ``data``
    (not only the ``--limit`` rows scored, so a small limit cannot shrink the set and inflate accuracy)."""
    answers = sorted({gold_answer(e) for e in examples})
    if not 2 <= len(answers) <= MAX_CLOSED_ANSWERS:
        raise ValueError(f"--task closed: {data} has {len(answers)} distinct answers; closed-set scoring needs "
                         f"2 to {MAX_CLOSED_ANSWERS} (use another task, e.g. --scorer generate with its answer rule)")
    return [dataclasses.replace(e, options=answers) for e in examples]


def run_evaluation(args: EvalArguments) -> EvalRun:
    """Evaluate as configured and write ``results.json`` / ``predictions.jsonl`` to ``args.output_dir``."""
    previous = [name for name in ("results.json", "predictions.jsonl") if (Path(args.output_dir) / name).exists()]
    if previous and not args.overwrite:
        raise OutputExistsError(f"--output_dir {args.output_dir} already holds {' and '.join(previous)}; pass --overwrite "
                                "to replace them, or choose another --output_dir")
    torch.manual_seed(args.seed)
    set_threads(args.num_threads, "linchain eval")
    loaded = []
    for data, task, inferred in plan_tasks(args):
        # closed tasks read every row (their answer set), then keep the first --limit, as load_eval_examples does
        examples = load_eval_examples(data, limit=None if task is CLOSED_TASK else args.limit, split=args.split,
                                      skip_malformed=args.skip_malformed, columns=args.columns())
        if task is CLOSED_TASK:
            examples = closed_set(data, examples)[:args.limit]
        loaded.append((data, task, inferred, examples))

    device = args.torch_device()
    model, tokenizer = load_causal_lm(args.model_name_or_path, args.adapter, dtype=args.dtype, merge=args.merge_adapter,
                                      device=device)
    results = [
        evaluate_task(
            model, tokenizer, examples, task, args.scorer, data, batch_size=args.per_device_eval_batch_size,
            num_beams=args.num_beams, max_new_tokens=args.max_new_tokens, normalize=args.normalize,
            share_prompt=args.share_prompt, faithful_prompt=args.faithful_prompt,
            append_choices=args.append_choices and task is not CLOSED_TASK,  # trained without a list of choices
            task_inferred=inferred, progress=args.progress,
        )
        for data, task, inferred, examples in loaded
    ]
    settings = {k: getattr(args, k) for k in _SETTINGS}
    if args.scorer == "loglik":
        settings["num_beams"] = settings["max_new_tokens"] = None  # not used by this scorer
    else:
        settings["share_prompt"] = settings["normalize"] = None
    payload = results_dict(results, model=args.model_name_or_path, adapter=args.adapter, scorer=args.scorer,
                           settings=settings, environment=environment(device))
    return EvalRun(results=results, payload=payload, path=write_results(args.output_dir, payload, results))
