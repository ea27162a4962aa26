"""Loading a causal LM with a saved adapter, for the commands that read one (eval, merge).

Training builds its model in :func:`linchain.train.engine.build_model`; every causal LM, here and
there, is created by :func:`linchain.tuner.quant.load_base_model` (bitsandbytes-quantized on request).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Tuple

import torch

from .resolve import find_adapter_dir, refuse_other_task, resolve_model_path, tokenizer_source, torch_dtype

__all__ = ["load_adapted", "load_causal_lm"]


def load_causal_lm(
    model_name_or_path: str,
    adapter: Optional[str] = None,
    dtype: str = "float32",
    merge: bool = False,
    device: Optional[str] = None,
) -> Tuple[torch.nn.Module, Any]:
    """``(model, tokenizer)`` ready for scoring: eval mode, a pad token, and the adapter loaded
    with PEFT (``import linchain`` registered LINCHAIN) and optionally merged (same outputs).

    The tokenizer comes from the adapter folder when it has one (training may add a pad token),
    else from the model. A model without a pad token pads with EOS; padded positions are masked.
    """
    from transformers import AutoTokenizer

    adapter = find_adapter_dir(adapter) if adapter else None
    if adapter:
        refuse_other_task(adapter, "CAUSAL_LM", "this command")
    path = resolve_model_path(model_name_or_path)
    model = load_adapted(path, adapter, torch_dtype(dtype, flag="--dtype"), merge)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source(adapter, path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device:
        model = model.to(device)
    return model.eval(), tokenizer


def load_adapted(path: str, adapter: Optional[Path], dtype: torch.dtype, merge: bool = False) -> torch.nn.Module:
    """The base model at ``path`` (resolved) with the adapter folder ``adapter`` loaded through PEFT after
    :func:`linchain.tuner.saved.load_peft_adapter`'s checks, merged with ``merge_and_unload(safe_merge=True)``
    (which refuses NaN/inf merged weights) when ``merge``; the base alone when ``adapter`` is None."""
    from .tuner.quant import load_base_model

    model = load_base_model(path, dtype, model_args=None)
    if adapter is None:
        return model
    from .tuner.saved import load_peft_adapter

    model = load_peft_adapter(model, adapter)
    return model.merge_and_unload(safe_merge=True) if merge else model
