"""``linchain eval``: score a model, adapter or merged model with the paper's protocol.

Flags override ``--config FILE.yaml``; ``--data``/``--task`` may be repeated (pairs, in order).
``--task_type seq_cls`` switches to the NLU path (encoder sequence classification), whose flags
are those of :class:`linchain.nlu.NLUArguments`.
"""

from __future__ import annotations

import datetime
import logging
import platform
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = ["main", "parse_args"]

_LIST_FLAGS = ("--data", "--task")


def _merge_repeated(argv: List[str], flags: Sequence[str]) -> List[str]:
    """``--data a --task x --data b --task y`` -> ``--data a b --task x y`` (argparse's nargs='+'
    would keep only the last occurrence)."""
    values: Dict[str, List[str]] = {f: [] for f in flags}
    rest: List[str] = []
    i = 0
    while i < len(argv):
        flag = argv[i]
        if flag in values:
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                values[flag].append(argv[i])
                i += 1
            continue
        rest.append(flag)
        i += 1
    for flag, vals in values.items():
        if vals:
            rest += [flag, *vals]
    return rest


def _config_values(argv: List[str]) -> Tuple[List[str], Dict[str, Any]]:
    """Remove ``--config FILE`` from ``argv`` and return the YAML mapping it names."""
    import yaml

    if "--config" not in argv:
        return argv, {}
    i = argv.index("--config")
    if i + 1 >= len(argv):
        raise ValueError("--config needs a FILE.yaml")
    path = Path(argv[i + 1])
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: expected a mapping of argument names to values, got {type(values).__name__}")
    return argv[:i] + argv[i + 2:], values


def parse_args(argv: Sequence[str], dataclass_type: Any, prog: str) -> Any:
    """One dataclass from YAML defaults (``--config``) overridden by flags; validation errors
    (the dataclass's ``__post_init__``) come back as ``ValueError``."""
    from transformers import HfArgumentParser

    argv, values = _config_values(list(argv))
    parser = HfArgumentParser(dataclass_type, prog=prog)
    parser.add_argument("--config", default=None, help="A YAML file of arguments; flags override it.")
    known = {action.dest for action in parser._actions}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"--config: unknown argument(s) {unknown}")
    parser.set_defaults(**values)
    # the dataclass first, then a Namespace with the extra --config (already consumed above)
    return parser.parse_args_into_dataclasses(args=_merge_repeated(argv, _LIST_FLAGS))[0]


def _environment() -> Dict[str, Any]:
    import peft
    import torch
    import transformers

    import linchain

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "linchain": linchain.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
        "peft": peft.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "device": "cuda" if torch.cuda.is_available() else "cpu", "cpu_threads": torch.get_num_threads(),
    }


def run(args: Any) -> int:
    import torch

    from ..eval import get_task, infer_task, load_eval_examples
    from ..eval.loading import load_causal_lm
    from ..eval.results import format_table, results_dict, write_results
    from ..eval.runner import evaluate_task

    torch.manual_seed(args.seed)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    # resolve every task (and reject loglik on numeric tasks) before the model is loaded
    plan = []
    for i, data in enumerate(args.data):
        inferred = not args.task
        name = args.task[i] if args.task else infer_task(data)
        if name is None:
            raise ValueError(f"cannot infer the task from {data!r}; pass --task (e.g. --task boolq)")
        task = get_task(name)
        if inferred:
            print(f"linchain eval: task {task.name!r} inferred from {data}", file=sys.stderr)
        if args.scorer == "loglik" and not task.multiple_choice:
            raise ValueError(f"--scorer loglik needs multiple-choice tasks; {task.name!r} ({data}) is a "
                             f"{task.kind} task: use --scorer generate")
        plan.append((data, task, inferred))
    loaded = [(data, task, inferred, load_eval_examples(data, limit=args.limit, split=args.split,
                                                        skip_malformed=args.skip_malformed, columns=args.columns()))
              for data, task, inferred in plan]

    model, tokenizer = load_causal_lm(args.model_name_or_path, args.adapter, dtype=args.dtype, merge=args.merge_adapter)
    results = []
    for data, task, inferred, examples in loaded:
        results.append(evaluate_task(
            model, tokenizer, examples, task, args.scorer, data, batch_size=args.per_device_eval_batch_size,
            num_beams=args.num_beams, max_new_tokens=args.max_new_tokens, normalize=args.normalize,
            share_prompt=args.share_prompt,
            faithful_prompt=args.faithful_prompt, append_choices=args.append_choices, task_inferred=inferred, progress=args.progress,
        ))
    settings = {k: getattr(args, k) for k in (
        "num_beams", "max_new_tokens", "limit", "per_device_eval_batch_size", "normalize", "share_prompt", "faithful_prompt",
        "append_choices", "data_columns", "split", "dtype", "seed", "num_threads", "merge_adapter")}
    if args.scorer == "loglik":
        settings["num_beams"] = settings["max_new_tokens"] = None  # not used by this scorer
    else:
        settings["share_prompt"] = settings["normalize"] = None
    payload = results_dict(results, model=args.model_name_or_path, adapter=args.adapter, scorer=args.scorer,
                           settings=settings, environment=_environment())
    path = write_results(args.output_dir, payload, results)
    print(format_table(results))
    print(f"wrote {path} and {path.parent / 'predictions.jsonl'}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    from ..data import DataError
    from ..offline import OfflineError

    try:
        if "--task_type" in argv and argv[argv.index("--task_type") + 1:][:1] == ["seq_cls"]:
            from ..nlu.cli import main as nlu_main
            return nlu_main(argv, prog="linchain eval")
        from ..eval.args import EvalArguments

        args = parse_args(argv, EvalArguments, prog="linchain eval")
        return run(args)
    except (DataError, OfflineError, ValueError, FileNotFoundError) as err:
        print(f"linchain eval: error: {err}", file=sys.stderr)
        return 2
