"""Command-line entry of the NLU path, shared by ``linchain eval`` and ``linchain train``.

``linchain train`` should dispatch ``--task_type seq_cls`` here with ``do_train=True``::

    if "--task_type" in argv and argv[argv.index("--task_type") + 1] == "seq_cls":
        from linchain.nlu.cli import main as seq_cls_main
        return seq_cls_main(argv, prog="linchain train", do_train=True)
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

__all__ = ["main"]


def main(argv: Optional[Sequence[str]] = None, prog: str = "linchain eval", do_train: bool = False) -> int:
    """Parse :class:`NLUArguments` (flags override ``--config FILE.yaml``), run, print the metrics."""
    from ..cli.eval import parse_args
    from ..data import DataError
    from .args import NLUArguments
    from .train import run_seq_cls, summary_lines

    argv = list(sys.argv[1:] if argv is None else argv)
    if do_train and "--do_train" not in argv:
        argv += ["--do_train", "true"]
    try:
        args = parse_args(argv, NLUArguments, prog=prog)
        result = run_seq_cls(args)
    except (DataError, ValueError, FileNotFoundError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(result)))
    print(f"wrote {args.output_dir}/results.json and predictions.jsonl")
    return 0
