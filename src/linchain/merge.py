"""Merge a saved adapter into its base model and save a plain transformers model (``linchain merge``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional, Union

from .io import atomic_dir, check_output_folder, refuse_output_over_inputs
from .resolve import adapter_base_model, find_adapter_dir, resolve_model_path, tokenizer_source, torch_dtype

__all__ = ["merge_adapter"]


def merge_adapter(adapter: Union[str, os.PathLike], output_dir: Union[str, os.PathLike], base_model: Optional[str] = None,
                  dtype: str = "float32", overwrite: bool = False) -> Path:
    """Load base + adapter (an adapter folder or a run folder), ``merge_and_unload(safe_merge=True)``,
    save model and tokenizer atomically to ``output_dir``. Returns the folder.

    A non-empty ``output_dir`` is refused unless ``overwrite``; the adapter's own folder (or its
    run folder) always is. A NaN/inf adapter is refused before merging, naming the layer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .saved import load_peft_adapter

    adapter = find_adapter_dir(adapter)
    # checked before the model loads: never over what is read (the adapter, its run, a local base model)
    check_output_folder(output_dir, {"the adapter being merged": adapter}, "--output_dir", overwrite)
    base_path = resolve_model_path(base_model or adapter_base_model(adapter) or "")
    if not base_path:
        raise ValueError(f"{adapter}/adapter_config.json names no base model: pass --base_model")
    if Path(base_path).is_dir():
        refuse_output_over_inputs(output_dir, {"the base model": base_path}, "--output_dir")
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch_dtype(dtype))
    # safe_merge checks the merged weights for NaN/inf before replacing the originals.
    merged = load_peft_adapter(base, adapter).merge_and_unload(safe_merge=True)
    source = tokenizer_source(adapter, base_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError):  # a base saved without one: merging needs none, so the model is saved alone
        tokenizer = None
        print(f"linchain merge: no tokenizer loads from {source}; the merged model is saved without one", file=sys.stderr)
    with atomic_dir(output_dir, overwrite=overwrite) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return Path(output_dir)
