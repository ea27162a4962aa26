"""``--task_type seq_cls`` of ``linchain train`` and ``linchain eval``: encoder sequence
classification (the paper's GLUE path), options of :class:`linchain.nlu.NLUArguments`."""

from __future__ import annotations

from typing import Sequence

from .args import parse

__all__ = ["run_seq_cls_command"]


def run_seq_cls_command(argv: Sequence[str], prog: str, do_train: bool) -> int:
    """Parse NLUArguments (``do_train`` set by the command), run, print the metrics (130 after a Ctrl-C)."""
    from ..nlu import NLUArguments, run_seq_cls
    from ..nlu.train import summary_lines

    argv = list(argv)
    if do_train and not any(a == "--do_train" or a.startswith("--do_train=") for a in argv):
        argv += ["--do_train", "true"]
    (args,) = parse(argv, (NLUArguments,), prog)
    result = run_seq_cls(args)
    if result.get("interrupted"):
        return 130  # as `linchain train`: Ctrl-C saved a checkpoint (said on stderr); no metrics yet
    print("\n".join(summary_lines(result)))
    print(f"wrote {args.output_dir}/results.json and predictions.jsonl")
    return 0
