"""Loading what is evaluated: a base model (folder or hub id), optionally with an adapter."""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch

from ..resolve import find_adapter_dir, resolve_model_path, tokenizer_source, torch_dtype

__all__ = ["load_causal_lm"]


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
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch_dtype(dtype, flag="--dtype")
    adapter = find_adapter_dir(adapter) if adapter else None
    path = resolve_model_path(model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source(adapter, path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if adapter:
        from ..tuner.saved import load_peft_adapter

        model = load_peft_adapter(model, adapter)
        if merge:
            model = model.merge_and_unload(safe_merge=True)
    if device:
        model = model.to(device)
    return model.eval(), tokenizer
