"""Merge a saved adapter into its base model and save a plain transformers model (``linchain merge``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from .io import OutputExistsError, atomic_dir, is_nonempty_dir
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
    out, source = Path(output_dir).resolve(), adapter.resolve()
    if out == source or out in source.parents:  # the adapter folder, its run folder, or above
        raise OutputExistsError(f"--output_dir {output_dir} holds the adapter being merged ({adapter}); choose another folder")
    if is_nonempty_dir(out) and not overwrite:  # checked before the model loads
        raise OutputExistsError(f"--output_dir {output_dir} already holds files; pass --overwrite to replace them, or choose another folder")
    base_path = resolve_model_path(base_model or adapter_base_model(adapter) or "")
    if not base_path:
        raise ValueError(f"{adapter}/adapter_config.json names no base model: pass --base_model")
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch_dtype(dtype))
    # safe_merge checks the merged weights for NaN/inf before replacing the originals.
    merged = load_peft_adapter(base, adapter).merge_and_unload(safe_merge=True)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source(adapter, base_path))
    with atomic_dir(output_dir, overwrite=overwrite) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return Path(output_dir)
