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
from typing import Any, Dict, List, Optional

import torch

from ..loading import load_causal_lm
from ..outputs import OutputFolder, run_of
from ..resolve import ADAPTER_CONFIG, adapter_base_model, find_adapter_dir, refuse_other_task
from ..threads import set_threads
from .args import EvalArguments
from .examples import gold_answer, load_eval_examples
from .results import TaskResult, format_table, results_dict, write_results
from .scoring import evaluate_task, gold_can_match
from .tasks import CLOSED_TASK, MAX_CLOSED_ANSWERS, TaskSpec, get_task, infer_task, rule_from_answers

__all__ = ["EvalRun", "run_evaluation"]

#: EvalArguments recorded under "settings" in results.json
_SETTINGS = (
    "num_beams",
    "max_new_tokens",
    "limit",
    "per_device_eval_batch_size",
    "normalize",
    "share_prompt",
    "faithful_prompt",
    "append_choices",
    "data_columns",
    "split",
    "dtype",
    "seed",
    "num_threads",
    "merge_adapter",
)


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
        "linchain": linchain.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "device": device,
        "cpu_threads": torch.get_num_threads(),
    }


def plan_tasks(args: EvalArguments) -> List[tuple[str, Optional[TaskSpec], bool]]:
    """``(data, task, inferred)`` per ``--data``; rejects what cannot be scored before a model loads.
    ``task`` is None where only the answers can tell the rule (:func:`load_rows` infers it)."""
    plan = []
    for i, data in enumerate(args.data):
        inferred = not args.task
        name = args.task[i] if args.task else infer_task(data)
        if name is None:
            if data.startswith("reasoning_gym:") or Path(data).exists():
                plan.append((data, None, True))  # the rule comes from the answers, once the rows are read
                continue
            if not data.startswith(("bigbench:", "hf:")):  # a path: a missing file is the cause, not the task
                raise FileNotFoundError(f"--data {data}: no such file")
            raise ValueError(f"--data {data}: cannot infer the task from the path; pass --task (e.g. --task boolq)")
        task = get_task(name)
        if inferred:
            print(f"linchain eval: task {task.name!r} inferred from {data}", file=sys.stderr)
        _check_scorer(args, task, data)
        plan.append((data, task, inferred))
    return plan


def _check_scorer(args: EvalArguments, task: TaskSpec, data: str) -> None:
    if args.scorer == "loglik" and not task.multiple_choice:
        raise ValueError(
            f"--scorer loglik needs multiple-choice tasks; {task.name!r} ({data}) is a "
            f"{task.kind} task: use --scorer generate"
        )


def closed_set(data: str, examples: list) -> list:
    """``--task closed``: each row's options are the sorted distinct gold answers of all the rows of ``data``
    (not only the ``--limit`` rows scored, so a small limit cannot shrink the set and inflate accuracy)."""
    answers = sorted({gold_answer(e) for e in examples})
    if not 2 <= len(answers) <= MAX_CLOSED_ANSWERS:
        raise ValueError(
            f"--task closed: {data} has {len(answers)} distinct answers; closed-set scoring needs "
            f"2 to {MAX_CLOSED_ANSWERS} (use another task, e.g. --scorer generate with its answer rule)"
        )
    return [dataclasses.replace(e, options=answers) for e in examples]


def load_rows(args: EvalArguments, plan: List[tuple[str, Optional[TaskSpec], bool]]) -> list:
    """``(data, task, inferred, examples)`` per ``--data``: rows read, rules inferred from the answers where
    the spec did not name one, and an inferred rule that can match none of the gold answers refused."""
    loaded = []
    for data, task, inferred in plan:
        whole = task is None or task is CLOSED_TASK  # the answer set is the whole file's, then --limit applies
        examples = load_eval_examples(
            data,
            limit=None if whole else args.limit,
            split=args.split,
            skip_malformed=args.skip_malformed,
            columns=args.columns(),
        )
        if task is None:
            task = rule_from_answers(
                data,
                [gold_answer(e) for e in examples],
                with_options=bool(examples) and all(getattr(e, "options", None) for e in examples),
            )
            rule = "closed-set scoring (task 'closed')" if task is CLOSED_TASK else f"the {task.kind} rule"
            print(
                f"linchain eval: {data}: {rule} inferred from its gold answers (--task to choose another)",
                file=sys.stderr,
            )
            _check_scorer(args, task, data)
        if task is CLOSED_TASK:
            examples = closed_set(data, examples)
        examples = examples[: args.limit] if args.limit else examples
        if inferred and examples and not any(gold_can_match(task, e, args.scorer) for e in examples):
            # a guessed rule under which no answer can ever be right would report 0% as a result
            raise ValueError(
                f"--data {data}: none of its gold answers can match the inferred {task.name!r} rule "
                f"(e.g. row {examples[0].row}: {gold_answer(examples[0])[:80]!r}); pass --task"
            )
        loaded.append((data, task, inferred, examples))
    return loaded


def resolve_base_model(args: EvalArguments) -> None:
    """``--adapter`` without ``--model_name_or_path``: the adapter's own base model, as ``linchain merge``
    does (its adapter_config.json's base_model_name_or_path), said on stderr so the choice is visible."""
    if args.adapter:  # before anything else is read: an adapter of another head cannot be scored here
        refuse_other_task(find_adapter_dir(args.adapter), "CAUSAL_LM", "linchain eval")
    if args.model_name_or_path:
        return
    adapter = find_adapter_dir(args.adapter)
    base = adapter_base_model(adapter)
    if not base:
        raise ValueError(
            f"--adapter {args.adapter}: its {ADAPTER_CONFIG} names no base model "
            "(base_model_name_or_path); pass --model_name_or_path"
        )
    print(
        f"linchain eval: scoring on the adapter's base model {base} ({ADAPTER_CONFIG}); "
        "--model_name_or_path chooses another",
        file=sys.stderr,
    )
    args.model_name_or_path = base


def output_folder(args: EvalArguments) -> OutputFolder:
    """results.json + predictions.jsonl as one output (kind ``eval``), never over what the run reads:
    the adapter, the local base model, a data file. It may lie inside the adapter's run (``RUN/eval``)."""
    adapter = find_adapter_dir(args.adapter) if args.adapter else None
    run = None
    if adapter is not None:
        run = Path(args.adapter) if adapter != Path(args.adapter) else run_of(adapter)
    model = Path(args.model_name_or_path).expanduser()
    inputs: Dict[str, Any] = {"the adapter": adapter, "the base model": model if model.is_dir() else None}
    inputs.update({f"the data {data}": data for data in args.data})  # specs that are no local path are skipped
    return OutputFolder(
        args.output_dir,
        "eval",
        overwrite=args.overwrite,
        inputs=inputs,
        runs={"the adapter's run": run},
        command="linchain eval",
    )


def run_evaluation(args: EvalArguments) -> EvalRun:
    """Evaluate as configured and write ``results.json`` / ``predictions.jsonl`` to ``args.output_dir``.

    Order: arguments and tasks, then the output folder (checked and locked: a file, a read-only or full
    disk, an input, earlier results without --overwrite are refused before any row or model loads),
    then rows, model and scores; both files appear together at the end (an --overwrite that fails while
    scoring leaves the previous pair as it was)."""
    resolve_base_model(args)
    plan = plan_tasks(args)
    out = output_folder(args)
    with out.locked():
        torch.manual_seed(args.seed)
        set_threads(args.num_threads, "linchain eval")
        loaded = load_rows(args, plan)
        device = args.torch_device()
        model, tokenizer = load_causal_lm(
            args.model_name_or_path, args.adapter, dtype=args.dtype, merge=args.merge_adapter, device=device
        )
        results = [
            evaluate_task(
                model,
                tokenizer,
                examples,
                task,
                args.scorer,
                data,
                batch_size=args.per_device_eval_batch_size,
                num_beams=args.num_beams,
                max_new_tokens=args.max_new_tokens,
                normalize=args.normalize,
                share_prompt=args.share_prompt,
                faithful_prompt=args.faithful_prompt,
                append_choices=args.append_choices and task is not CLOSED_TASK,  # trained without a list of choices
                task_inferred=inferred,
                progress=args.progress,
            )
            for data, task, inferred, examples in loaded
        ]
        settings = {k: getattr(args, k) for k in _SETTINGS}
        if args.scorer == "loglik":
            settings["num_beams"] = settings["max_new_tokens"] = None  # not used by this scorer
        else:
            settings["share_prompt"] = settings["normalize"] = None
        payload = results_dict(
            results,
            model=args.model_name_or_path,
            adapter=args.adapter,
            scorer=args.scorer,
            settings=settings,
            environment=environment(device),
        )
        with out.replace_whole() as tmp:
            write_results(tmp, payload, results)
    return EvalRun(results=results, payload=payload, path=out.path / "results.json")
