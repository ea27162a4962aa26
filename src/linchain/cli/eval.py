"""``linchain eval``: flags (over ``--config FILE.yaml``) -> :func:`linchain.eval.run_evaluation`.

Score a base model, an adapter (folder or ``linchain train`` run folder) or a merged model with
the paper's protocol. ``--data``/``--task`` may be repeated (pairs, in order). ``--task_type
seq_cls`` evaluates an encoder classifier instead (options of :class:`linchain.nlu.NLUArguments`).
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from .args import parse, pop_task_type, run_command
from .seq_cls import run_seq_cls_command

__all__ = ["main"]

PROG = "linchain eval"


def _eval(argv: list[str]) -> int:
    task_type, argv = pop_task_type(argv, PROG)
    if task_type == "seq_cls":
        return run_seq_cls_command(argv, PROG, do_train=False)
    from ..eval import EvalArguments, run_evaluation

    (args,) = parse(argv, (EvalArguments,), PROG, task_type="causal_lm")
    run = run_evaluation(args)
    print(run.table())
    print(f"wrote {run.path} and {run.path.parent / 'predictions.jsonl'}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_command(PROG, lambda: _eval(argv))


if __name__ == "__main__":
    sys.exit(main())
