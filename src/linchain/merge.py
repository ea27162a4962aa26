"""Merge a saved adapter into its base model and save a plain transformers model (``linchain merge``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from .io import atomic_dir
from .resolve import adapter_base_model, find_adapter_dir, resolve_model_path, tokenizer_source, torch_dtype

__all__ = ["merge_adapter"]


def merge_adapter(adapter: Union[str, os.PathLike], output_dir: Union[str, os.PathLike], base_model: Optional[str] = None,
                  dtype: str = "float32") -> Path:
    """Load base + adapter (an adapter folder or a run folder), ``merge_and_unload(safe_merge=True)``,
    save model and tokenizer atomically to ``output_dir``. Returns the folder."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import linchain  # noqa: F401  (registers LINCHAIN with PEFT)

    adapter = find_adapter_dir(adapter)
    base_path = resolve_model_path(base_model or adapter_base_model(adapter) or "")
    if not base_path:
        raise ValueError(f"{adapter}/adapter_config.json names no base model: pass --base_model")
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch_dtype(dtype))
    # safe_merge checks the merged weights for NaN/inf before replacing the originals.
    merged = PeftModel.from_pretrained(base, adapter).merge_and_unload(safe_merge=True)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source(adapter, base_path))
    with atomic_dir(output_dir) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return Path(output_dir)
