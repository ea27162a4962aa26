"""Loading what is evaluated: a base model (folder or hub id), optionally with an adapter."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Tuple

import torch

__all__ = ["DTYPES", "OFFLINE_MODEL", "load_causal_lm", "resolve_model_path"]

logger = logging.getLogger("linchain.eval")

#: ``--model_name_or_path`` value meaning the offline SmolLM2-135M-Instruct (same as `linchain train`)
OFFLINE_MODEL = "smollm2"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_model_path(name: str) -> str:
    if name == OFFLINE_MODEL:
        from ..offline import smollm2_path
        return str(smollm2_path())
    return name


def load_causal_lm(model_name_or_path: str, adapter: Optional[str] = None, dtype: str = "float32",
                   merge: bool = False, device: Optional[str] = None) -> Tuple[torch.nn.Module, Any]:
    """``(model, tokenizer)`` ready for scoring: eval mode, a pad token, and the adapter loaded
    with PEFT (``import linchain`` registered LINCHAIN) and optionally merged (same outputs).

    The tokenizer comes from the adapter folder when it has one (training may add a pad token),
    else from the model. A model without a pad token pads with EOS; padded positions are masked.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    path = resolve_model_path(model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype])
    tok_source = adapter if adapter and (Path(adapter) / "tokenizer_config.json").exists() else path
    tokenizer = AutoTokenizer.from_pretrained(tok_source)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if adapter:
        import linchain  # noqa: F401  (registers LINCHAIN with PEFT)
        from peft import PeftModel

        if not (Path(adapter) / "adapter_config.json").exists():
            raise ValueError(f"--adapter {adapter}: no adapter_config.json in that folder")
        model = PeftModel.from_pretrained(model, adapter)
        if merge:
            model = model.merge_and_unload()
    if device:
        model = model.to(device)
    return model.eval(), tokenizer
