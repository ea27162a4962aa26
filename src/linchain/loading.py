"""Loading a causal LM with a saved adapter, for the commands that read one (eval, merge).

Training builds its model in :func:`linchain.train.engine.build_model`; every causal LM, here and
there, is created by :func:`linchain.tuner.quant.load_base_model` (bitsandbytes-quantized on request).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Tuple, Union

import torch

from .resolve import find_adapter_dir, refuse_other_task, resolve_model_path, tokenizer_source, torch_dtype

__all__ = ["check_untied", "load_adapted", "load_causal_lm"]


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
    if not merge:
        return model
    check_untied(model, adapter)
    return model.merge_and_unload(safe_merge=True)


def check_untied(model, adapter: Union[str, os.PathLike]) -> None:
    """Refuse to merge into a weight that another module shares (tie_word_embeddings: lm_head and the
    embedding are one Parameter). Merging writes the update into that Parameter, so the tied module
    changes too and the saved model is wrong while the merge reports success (PEFT LoRA alike).
    Raises ``ValueError`` naming the adapted layer, the module it shares with, and the way round."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from .tuner.saved import module_path

    params = list(model.named_parameters(remove_duplicate=False))
    for name, module in model.named_modules():
        if not isinstance(module, BaseTunerLayer):
            continue
        weight = getattr(module.get_base_layer(), "weight", None)
        if weight is None:
            continue
        shared = [n for n, p in params if _same_storage(p, weight) and not n.startswith(name + ".")]
        if shared:
            layer, other = module_path(name), module_path(shared[0]).removesuffix(".weight")
            raise ValueError(
                f"{adapter}: the adapted layer {layer} shares its weight with {other} (tied weights, e.g. "
                f"tie_word_embeddings), so merging would change {other} too and save a wrong model; keep the "
                f"adapter unmerged (load it with PEFT, or linchain eval --adapter without --merge_adapter), or train without "
                f"{layer.rsplit('.', 1)[-1]} in target_modules"
            )


def _same_storage(a, b) -> bool:
    """One Parameter, or two views of the same memory (a merge in place would reach both)."""
    if a is b:
        return True
    if a.device != b.device or a.device.type == "meta" or not (a.numel() and b.numel()):
        return False  # meta and empty tensors have no memory to share (their data_ptr is 0)
    return a.data_ptr() == b.data_ptr()
