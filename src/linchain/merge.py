"""Merge a saved adapter into its base model and save a plain transformers model (``linchain merge``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional, Union

from .outputs import MIN_FREE_BYTES, OutputFolder, folder_bytes, run_of
from .resolve import (
    adapter_base_model,
    find_adapter_dir,
    refuse_other_task,
    resolve_model_path,
    tokenizer_source,
    torch_dtype,
)

__all__ = ["merge_adapter"]


def merge_adapter(
    adapter: Union[str, os.PathLike],
    output_dir: Union[str, os.PathLike],
    base_model: Optional[str] = None,
    dtype: str = "float32",
    overwrite: bool = False,
) -> Path:
    """Load base + adapter (an adapter folder or a run folder), ``merge_and_unload(safe_merge=True)``,
    save model and tokenizer atomically to ``output_dir``. Returns the folder.

    ``output_dir`` goes through :class:`linchain.outputs.OutputFolder` (kind ``merge``): a non-empty
    one is replaced only with ``overwrite`` and only when it holds an earlier merge; the adapter, its
    run and a local base model never are. A NaN/inf adapter is refused before merging, naming the layer."""
    adapter = find_adapter_dir(adapter)
    refuse_other_task(
        adapter,
        "CAUSAL_LM",
        "linchain merge",
        way="a classifier adapter is used unmerged (linchain eval --task_type seq_cls --adapter ...)",
    )
    if base_model:
        base_path = resolve_model_path(base_model, "--base_model")
    else:
        saved = adapter_base_model(adapter)
        if not saved:
            raise ValueError(f"{adapter}/adapter_config.json names no base model: pass --base_model")
        base_path = resolve_model_path(saved, f"{adapter}/adapter_config.json's base_model_name_or_path (--base_model)")
    # checked before the model loads, and locked while merging: never over what is read (the adapter,
    # its run, a local base model), never a folder of another kind, room for the merged weights
    out = OutputFolder(
        output_dir,
        "merge",
        overwrite=overwrite,
        command="linchain merge",
        inputs={"the adapter being merged": adapter, "the base model": base_path},
        runs={"the adapter's run": run_of(adapter)},
        needs_bytes=max(MIN_FREE_BYTES, folder_bytes(base_path) * (2 if dtype == "float32" else 1)),
    )
    with out.locked():
        merged, tokenizer = _load_and_merge(adapter, base_path, dtype)
        with out.replace_whole() as tmp:
            merged.save_pretrained(tmp, safe_serialization=True)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
    return Path(output_dir)


def _load_and_merge(adapter: Path, base_path: str, dtype: str):
    """``(merged model, tokenizer or None)``: base + adapter, ``merge_and_unload(safe_merge=True)``."""
    from transformers import AutoTokenizer

    from .loading import load_adapted

    # safe_merge checks the merged weights for NaN/inf; a weight tied to another module is refused first
    merged = load_adapted(base_path, adapter, torch_dtype(dtype), merge=True)
    source = tokenizer_source(adapter, base_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError):  # a base saved without one: merging needs none, so the model is saved alone
        tokenizer = None
        print(
            f"linchain merge: no tokenizer loads from {source}; the merged model is saved without one", file=sys.stderr
        )
    return merged, tokenizer
