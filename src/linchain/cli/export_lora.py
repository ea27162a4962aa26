"""``linchain export-lora SRC DST [--affine error|lora_bias]``."""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from ..export import AFFINE_MODES, export_lora

__all__ = ["main"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="linchain export-lora", description=export_lora.__doc__.split("\n\n")[0])
    parser.add_argument("src", help="LinChain adapter folder (adapter_config.json + adapter_model.safetensors)")
    parser.add_argument("dst", help="folder for the PEFT LoRA adapter")
    parser.add_argument("--affine", choices=AFFINE_MODES, default="error",
                        help="affine chains: 'error' (default) or 'lora_bias' (exact, LoRA with lora_bias=True)")
    args = parser.parse_args(argv)
    out = export_lora(args.src, args.dst, affine=args.affine)
    print(f"wrote a PEFT LoRA adapter to {out}")
    return 0
