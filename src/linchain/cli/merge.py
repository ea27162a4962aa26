"""``linchain merge``: fold an adapter into its base model and save a plain transformers model.

The merged folder loads with ``AutoModelForCausalLM.from_pretrained`` alone (no PEFT, no linchain)
and gives the adapted model's outputs; an affine chain's constant goes into the layers' biases.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Optional, Sequence

from ..resolve import DTYPES
from ..threads import THREADS_HELP, check_num_threads, set_threads
from .args import parse, run_command

__all__ = ["MergeArguments", "main"]

PROG = "linchain merge"


@dataclass
class MergeArguments:
    adapter: str = field(
        metadata={"help": "An adapter folder (adapter_config.json), or a `linchain train` output_dir holding adapter/."}
    )
    output_dir: str = field(metadata={"help": "Where the merged model (safetensors, config, tokenizer) is written."})
    base_model: Optional[str] = field(
        default=None,
        metadata={"help": "Base model folder, hub id or offline name; default: the adapter's base_model_name_or_path."},
    )
    torch_dtype: str = field(
        default="float32", metadata={"help": f"Dtype to load the base in and save: {', '.join(DTYPES)}."}
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace a non-empty --output_dir (refused without it)."})
    num_threads: Optional[int] = field(default=None, metadata={"help": THREADS_HELP})

    def __post_init__(self) -> None:
        if self.torch_dtype not in DTYPES:
            raise ValueError(f"--torch_dtype {self.torch_dtype!r}: must be one of {', '.join(DTYPES)}")
        check_num_threads(self.num_threads, "--num_threads")


def _merge(argv: list[str]) -> int:
    from ..merge import merge_adapter

    (args,) = parse(argv, (MergeArguments,), PROG)
    set_threads(args.num_threads, PROG)
    out = merge_adapter(
        args.adapter, args.output_dir, base_model=args.base_model, dtype=args.torch_dtype, overwrite=args.overwrite
    )
    print(f"{PROG}: wrote a plain transformers model to {out}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_command(PROG, lambda: _merge(argv))


if __name__ == "__main__":
    sys.exit(main())
