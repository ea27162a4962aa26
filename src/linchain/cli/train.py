"""``linchain train``: parse the three argument dataclasses (flags override ``--config FILE.yaml``) and run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

import yaml

__all__ = ["main", "parse_args"]


def _merge_repeated(argv: list[str], flag: str) -> list[str]:
    """``--data A --data B`` -> ``--data A B`` (argparse's nargs='+' would keep only the last)."""
    values, rest, i = [], [], 0
    while i < len(argv):
        if argv[i] == flag:
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                values.append(argv[i])
                i += 1
        elif argv[i].startswith(flag + "="):
            values.append(argv[i].split("=", 1)[1])
            i += 1
        else:
            rest.append(argv[i])
            i += 1
    return rest + ([flag, *values] if values else [])


def parse_args(argv: Sequence[str]):
    """(ModelArguments, DataArguments, LinChainTrainingArguments) from flags and an optional YAML file."""
    from transformers import HfArgumentParser

    from ..train.args import DataArguments, LinChainTrainingArguments, ModelArguments

    parser = HfArgumentParser((ModelArguments, DataArguments, LinChainTrainingArguments), prog="linchain train")
    parser.add_argument("--config", type=str, default=None, help="A YAML file of arguments; flags on the command line override it.")
    argv = _merge_repeated(list(argv), "--data")
    config_path = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            parser.error("--config needs a FILE.yaml")
        config_path = argv[i + 1]
        argv = argv[:i] + argv[i + 2 :]
    if config_path:
        values = yaml.safe_load(Path(config_path).read_text()) or {}
        if not isinstance(values, dict):
            parser.error(f"--config {config_path}: expected a mapping of argument names to values")
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - known - {"resolved_model_path"})
        if unknown:
            parser.error(f"--config {config_path}: unknown argument(s) {unknown}")
        values.pop("resolved_model_path", None)
        # The file's values become the parser's defaults; flags given on the command line win.
        parser.set_defaults(**values)
    # Returns the three dataclasses, a Namespace holding the (already consumed) --config, and leftovers.
    *parsed, extra = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    model_args, data_args, train_args = parsed[:3]
    if extra:
        parser.error(f"unrecognised arguments: {' '.join(extra)}")
    return model_args, data_args, train_args


def _pop_task_type(argv: list[str]) -> tuple[Optional[str], list[str]]:
    """``--task_type X`` (or ``--task_type=X``) taken out of ``argv``."""
    for i, arg in enumerate(argv):
        if arg == "--task_type" and i + 1 < len(argv):
            return argv[i + 1], argv[:i] + argv[i + 2 :]
        if arg.startswith("--task_type="):
            return arg.split("=", 1)[1], argv[:i] + argv[i + 1 :]
    return None, argv


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    task_type, rest = _pop_task_type(argv)
    if task_type == "seq_cls":
        # sequence classification on encoders has its own arguments (NLUArguments) and engine
        from ..nlu.cli import main as seq_cls_main

        return seq_cls_main(argv, prog="linchain train", do_train=True)
    if task_type not in (None, "causal_lm"):
        print(f"linchain train: --task_type={task_type!r} is not valid; use causal_lm (the default) or seq_cls", file=sys.stderr)
        return 2
    argv = rest
    try:
        model_args, data_args, train_args = parse_args(argv)
    except ValueError as err:  # a dataclass __post_init__ naming the field and the value
        print(f"linchain train: {err}", file=sys.stderr)
        return 2
    from ..data import DataError
    from ..offline import OfflineError
    from ..train.engine import run_training

    try:
        result = run_training(model_args, data_args, train_args)
    except (DataError, OfflineError) as err:
        print(f"linchain train: {err}", file=sys.stderr)
        return 2
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
