"""``linchain export-lora SRC DST [--affine error|lora_bias]``: a LinChain adapter as a stock PEFT LoRA adapter."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Optional, Sequence

from ..export import AFFINE_MODES
from ..resolve import find_adapter_dir
from ..threads import THREADS_HELP, check_num_threads, set_threads
from .args import parse, run_command

__all__ = ["ExportArguments", "main"]

PROG = "linchain export-lora"


@dataclass
class ExportArguments:
    src: str = field(
        metadata={"help": "SRC: LinChain adapter folder (adapter_config.json + adapter_model.safetensors)."}
    )
    dst: str = field(metadata={"help": "DST: folder for the PEFT LoRA adapter."})
    affine: str = field(
        default="error",
        metadata={
            "help": "Affine chains (mixer_bias): 'error' (default) or 'lora_bias' (exact, LoRA with lora_bias=True).",
            "choices": list(AFFINE_MODES),
        },
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace a non-empty DST (refused without it)."})
    num_threads: Optional[int] = field(default=None, metadata={"help": THREADS_HELP})

    def __post_init__(self) -> None:
        check_num_threads(self.num_threads, "--num_threads")


def _export(argv: list[str]) -> int:
    from ..export import export_lora

    (args,) = parse(
        argv,
        (ExportArguments,),
        PROG,
        description="Write a LinChain adapter as a standard PEFT LoRA adapter.",
        positional=("src", "dst"),
    )
    set_threads(args.num_threads, PROG)
    out = export_lora(find_adapter_dir(args.src, flag="SRC"), args.dst, affine=args.affine, overwrite=args.overwrite)
    print(f"wrote a PEFT LoRA adapter to {out}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_command(PROG, lambda: _export(argv))


if __name__ == "__main__":
    sys.exit(main())
