"""``linchain train``: flags (over ``--config FILE.yaml``) -> :func:`linchain.train.run_training`.

``--task_type seq_cls`` fine-tunes an encoder for sequence classification instead
(:func:`linchain.nlu.run_seq_cls`, options of :class:`linchain.nlu.NLUArguments`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

from .args import _config_values, parse, pop_task_type, run_command
from .seq_cls import run_seq_cls_command

__all__ = ["main", "parse_args"]

PROG = "linchain train"

#: keys a --config file may hold but that never come from one: how a run is launched (an older
#: linchain saved ``overwrite: true`` into train_config.yaml, and reusing that file with --config
#: wiped the run it came from) and secrets. They are taken from the command line only.
LAUNCH_KEYS = (
    "overwrite",
    "resume",
    "resume_from_checkpoint",
    "overwrite_output_dir",
    "logging_dir",
    "hub_token",
    "push_to_hub_token",
)
#: errors of the file system that are the user's to fix (a read-only folder, a full disk), in one line


def _say_ignored(argv: Sequence[str]) -> None:
    """Name the launch keys a --config file holds (they are ignored), so nothing is dropped silently."""
    _, values, path = _config_values(list(argv))
    held = [k for k in LAUNCH_KEYS if values.get(k) not in (None, False, "")]
    if held:
        print(
            f"{PROG}: --config {path}: ignoring {', '.join(held)} (how a run is launched, not what it is: "
            "give it on the command line)",
            file=sys.stderr,
            flush=True,
        )


def parse_args(argv: Sequence[str]):
    """(ModelArguments, DataArguments, LinChainTrainingArguments) from flags and an optional YAML file.

    ``--resume`` without ``--config``: the run's own train_config.yaml stands in for one, so a setting
    not given on the command line keeps the run's value (a resumed run continues with its own
    settings), and only a flag given with another value is refused as a change (check_resume).
    """
    from ..train.args import DataArguments, LinChainTrainingArguments, ModelArguments

    def _parse(argv: Sequence[str]):
        _say_ignored(argv)
        # a run's train_config.yaml also records the resolved model folder and the data files' sha256
        # (records, not options); --config reads it back
        return parse(
            argv,
            (ModelArguments, DataArguments, LinChainTrainingArguments),
            PROG,
            ignore_config_keys=("resolved_model_path", "data_sha256", *LAUNCH_KEYS),
            task_type="causal_lm",
        )

    parsed = _parse(argv)
    record = _run_record(argv, parsed[2])
    if record is None:
        return parsed
    try:
        parsed = _parse(["--config", str(record), *argv])
    except ValueError as err:  # a record from another version: the flags alone, compared with it as before
        print(
            f"{PROG}: --resume: the run's settings in {record} cannot stand in for flags not given "
            f"({str(err).splitlines()[0][:200]}); the flags given are compared with them as they are",
            file=sys.stderr,
            flush=True,
        )
        return parsed
    print(f"{PROG}: --resume: settings not given on the command line are the run's own ({record})", file=sys.stderr)
    return parsed


def _run_record(argv: Sequence[str], train_args) -> Optional[Path]:
    """The train_config.yaml of the run a ``--resume`` without ``--config`` continues, or None."""
    if not train_args.resume or any(a == "--config" or a.startswith("--config=") for a in argv):
        return None
    from .. import runs

    record = Path(train_args.output_dir) / runs.CONFIG
    return record if record.is_file() else None


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
