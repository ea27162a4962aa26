"""``linchain`` entry point: dispatches sub-commands, each in its own module, imported lazily."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Optional, Sequence

__all__ = ["COMMANDS", "main"]

#: sub-command -> (module under linchain.cli, one-line help)
COMMANDS = {
    "train": ("train", "fine-tune a model with LinChain, LoRA, MoSLoRA, PEFT LoRA or full fine-tuning"),
    "eval": ("eval", "evaluate a model or adapter with the paper's protocol"),
    "merge": ("merge", "merge an adapter into its base model and save a plain transformers model"),
    "export-lora": ("export_lora", "export a LinChain adapter as a standard PEFT LoRA adapter"),
    "analyze": ("analyze", "spectra and effective rank of adapter updates"),
    "compare": ("compare", "compare methods: per-method learning rates, seeds, paired statistics, report"),
}


def _usage() -> str:
    lines = ["usage: linchain COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`linchain COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:
        # the reader went away (`linchain train --help | head`): stop quietly, as Unix tools do; stdout
        # goes to /dev/null so that the interpreter's final flush does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    from .noise import quiet_known_noise

    quiet_known_noise()
    if name not in COMMANDS:
        print(f"linchain: unknown command {name!r}; valid commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(f"linchain.cli.{COMMANDS[name][0]}")
    except ModuleNotFoundError as err:
        if err.name == f"linchain.cli.{COMMANDS[name][0]}":
            print(f"linchain: the {name!r} command is not available in this version.", file=sys.stderr)
            return 2
        raise
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
