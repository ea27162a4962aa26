"""``linchain merge``: fold an adapter into its base model and save a plain transformers model.

The merged folder loads with ``AutoModelForCausalLM.from_pretrained`` alone (no PEFT, no linchain)
and gives the adapted model's outputs; an affine chain's constant goes into the layers' biases.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["MergeArguments", "main", "merge_adapter"]


@dataclass
class MergeArguments:
    adapter: str = field(metadata={"help": "An adapter folder (adapter_config.json), or a `linchain train` output_dir holding adapter/."})
    output_dir: str = field(metadata={"help": "Where the merged model (safetensors, config, tokenizer) is written."})
    base_model: Optional[str] = field(
        default=None, metadata={"help": "Base model folder or hub id; default: the adapter's base_model_name_or_path."}
    )
    torch_dtype: str = field(default="float32", metadata={"help": "Dtype to load the base in and save: float32, bfloat16 or float16."})

    def __post_init__(self) -> None:
        if self.torch_dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"MergeArguments.torch_dtype={self.torch_dtype!r}: must be float32, bfloat16 or float16")
        folder = Path(self.adapter)
        if not (folder / "adapter_config.json").exists() and (folder / "adapter" / "adapter_config.json").exists():
            self.adapter = str(folder / "adapter")
        if not (Path(self.adapter) / "adapter_config.json").exists():
            raise ValueError(f"MergeArguments.adapter={self.adapter!r}: no adapter_config.json there (nor in its adapter/ folder)")


def merge_adapter(args: MergeArguments) -> Path:
    """Load base + adapter, ``merge_and_unload(safe_merge=True)``, save atomically. Returns the folder."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import linchain  # noqa: F401  (registers LINCHAIN with PEFT)

    from ..io import atomic_dir

    adapter = Path(args.adapter)
    base_path = args.base_model or json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base_path:
        raise ValueError(f"{adapter}/adapter_config.json names no base model: pass --base_model")
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=getattr(torch, args.torch_dtype))
    # safe_merge checks the merged weights for NaN/inf before replacing the originals.
    merged = PeftModel.from_pretrained(base, adapter).merge_and_unload(safe_merge=True)
    tokenizer_source = adapter if (adapter / "tokenizer_config.json").exists() else base_path
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    with atomic_dir(args.output_dir) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return Path(args.output_dir)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from transformers import HfArgumentParser

    parser = HfArgumentParser(MergeArguments, prog="linchain merge")
    try:
        (args,) = parser.parse_args_into_dataclasses(args=list(sys.argv[1:] if argv is None else argv))
    except ValueError as err:
        print(f"linchain merge: {err}", file=sys.stderr)
        return 2
    out = merge_adapter(args)
    print(f"linchain merge: wrote a plain transformers model to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
