"""``linchain train``: flags (over ``--config FILE.yaml``) -> :func:`linchain.train.run_training`.

``--task_type seq_cls`` fine-tunes an encoder for sequence classification instead
(:func:`linchain.nlu.run_seq_cls`, options of :class:`linchain.nlu.NLUArguments`).
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from .args import parse, pop_task_type, run_command
from .seq_cls import run_seq_cls_command

__all__ = ["main", "parse_args"]

PROG = "linchain train"


def parse_args(argv: Sequence[str]):
    """(ModelArguments, DataArguments, LinChainTrainingArguments) from flags and an optional YAML file."""
    from ..train.args import DataArguments, LinChainTrainingArguments, ModelArguments

    # a run's train_config.yaml also records the resolved model folder; --config reads it back
    return parse(argv, (ModelArguments, DataArguments, LinChainTrainingArguments), PROG, ignore_config_keys=("resolved_model_path",))


def _train(argv: list[str]) -> int:
    task_type, argv = pop_task_type(argv, PROG)
    if task_type == "seq_cls":
        return run_seq_cls_command(argv, PROG, do_train=True)
    from ..train.engine import run_training

    result = run_training(*parse_args(argv))
    return 130 if result.interrupted else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_command(PROG, lambda: _train(argv))


if __name__ == "__main__":
    sys.exit(main())
