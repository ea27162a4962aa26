"""Export a saved LinChain adapter as a standard PEFT LoRA adapter."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Optional, Union

import torch
from peft import LoraConfig
from safetensors.torch import load_file, save_file

from .config import LINCHAIN
from .io import atomic_dir
from .layer import LinChainLayer

__all__ = ["AFFINE_MODES", "adapter_files", "chain_layers", "export_lora", "group_chain_tensors"]

AFFINE_MODES = ("error", "lora_bias")

_ADAPTER = "default"

_KEY = re.compile(r"^(?P<layer>.+)\.linchain_(?P<part>A|B|mixers\.(?P<idx>\d+))\.(?P<param>weight|bias)$")


def adapter_files(folder: Union[str, os.PathLike], need: str) -> tuple[Path, Path]:
    """``(adapter_config.json, adapter_model.safetensors)`` in ``folder``; FileNotFoundError saying ``need`` if absent."""
    folder = Path(folder)
    paths = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: {need}.")
    return paths


def group_chain_tensors(
    tensors: dict[str, torch.Tensor], source: str = "adapter"
) -> tuple[dict[str, dict], dict[str, torch.Tensor]]:
    """Group a saved LinChain state dict by adapted layer.

    Returns ``(layers, passthrough)``: ``layers[prefix] = {"A": (r, in), "B": (out, r),
    "mixers": {i: {"weight": (r, r), "bias": (r,)}}}`` keyed by the layer's module path, and the
    tensors that are not LinChain factors (``modules_to_save`` and the like). Raises
    ``ValueError`` on a ``.linchain_`` key it does not recognise; ``source`` names the file in it.
    Shared by :func:`export_lora` and :mod:`linchain.analysis` so the key format is parsed once.
    """
    layers: dict[str, dict] = {}
    passthrough = {}
    for key, value in tensors.items():
        m = _KEY.match(key)
        if m is None:
            if ".linchain_" in key:
                raise ValueError(f"{source}: unrecognised LinChain key {key!r}; was it written by linchain >= 0.1?")
            passthrough[key] = value  # modules_to_save and the like travel unchanged
            continue
        entry = layers.setdefault(m["layer"], {"mixers": {}})
        if m["idx"] is not None:
            entry["mixers"].setdefault(int(m["idx"]), {})[m["param"]] = value
        else:
            entry[m["part"]] = value
    return layers, passthrough


def chain_layers(
    tensors: dict[str, torch.Tensor], config: dict, source: str, dtype: Optional[torch.dtype] = None
) -> dict[str, LinChainLayer]:
    """Every layer of a saved LinChain adapter as a :meth:`LinChainLayer.from_factors` layer.

    Keyed by the module path as saved (``base_model.model....q_proj``); scaling from ``config``
    (alpha, r, use_rslora); ``dtype`` converts the factors (None keeps them). Raises ``ValueError``
    naming ``source`` when a layer lacks A or B.
    """
    def cast(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        return t if t is None or dtype is None else t.to(dtype)

    groups, _ = group_chain_tensors(tensors, source=source)
    layers = {}
    for name, entry in groups.items():
        if "A" not in entry or "B" not in entry:
            raise ValueError(f"{source}: layer {name!r} lacks linchain_A or linchain_B.")
        r = entry["A"].shape[0]
        scaling = config["alpha"] / (math.sqrt(r) if config.get("use_rslora") else r)
        mixers = [(cast(entry["mixers"][i]["weight"]), cast(entry["mixers"][i].get("bias"))) for i in sorted(entry["mixers"])]
        layers[name] = LinChainLayer.from_factors(cast(entry["A"]), mixers, cast(entry["B"]), scaling, _ADAPTER)
    return layers


def export_lora(src: Union[str, os.PathLike], dst: Union[str, os.PathLike], affine: str = "error") -> Path:
    """Write the LinChain adapter in ``src`` as a stock PEFT LoRA adapter in ``dst``.

    A linear chain (``mixer_bias=False``) is exact: ``A' = M_k ... M_1 A``, ``B' = B``, same r,
    alpha and scaling, so ``B' A' = B M_k ... M_1 A``. An affine chain also has a constant term
    ``s * B c``; plain LoRA cannot express it, so by default this raises. With
    ``affine="lora_bias"`` the constant ships as the bias of ``lora_B`` (PEFT's ``lora_bias=True``,
    which PEFT scales like the rest of the update), which is exact as well.

    Returns the ``dst`` path. ``dst`` is written atomically.
    """
    if affine not in AFFINE_MODES:
        raise ValueError(f"affine must be one of {list(AFFINE_MODES)}, got affine={affine!r}.")
    src = Path(src)
    config_path, weights_path = adapter_files(src, "export_lora needs a LinChain adapter folder written by save_pretrained")
    config = json.loads(config_path.read_text())
    if config.get("peft_type") != LINCHAIN:
        raise ValueError(f"{config_path} has peft_type={config.get('peft_type')!r}; export_lora converts {LINCHAIN!r} adapters.")

    tensors = load_file(str(weights_path))
    _, passthrough = group_chain_tensors(tensors, source=str(weights_path))
    out = dict(passthrough)
    has_affine = False
    # float64 factors: folding k mixers adds no rounding of its own
    for layer_name, layer in chain_layers(tensors, config, str(weights_path), dtype=torch.float64).items():
        A_folded, c = layer._fold(_ADAPTER)
        B = tensors[f"{layer_name}.linchain_B.weight"]
        out[f"{layer_name}.lora_A.weight"] = A_folded.to(tensors[f"{layer_name}.linchain_A.weight"].dtype).contiguous()
        out[f"{layer_name}.lora_B.weight"] = B.contiguous()
        if c is not None:
            has_affine = True
            out[f"{layer_name}.lora_B.bias"] = (layer.linchain_B[_ADAPTER].weight @ c).to(B.dtype).contiguous()

    if has_affine and affine == "error":
        raise ValueError(
            f"{src} holds an affine chain (mixer_bias=True): its update has a constant term s*B*c that plain LoRA "
            "cannot express, so a plain LoRA export would not be exact. Pass affine='lora_bias' to export it exactly as "
            "LoRA with lora_bias=True (the constant becomes lora_B's bias), or merge the adapter instead."
        )

    lora_config = LoraConfig(
        r=config["r"],
        lora_alpha=config["alpha"],
        lora_dropout=config.get("dropout", 0.0),
        target_modules=config.get("target_modules"),
        exclude_modules=config.get("exclude_modules"),
        use_rslora=config.get("use_rslora", False),
        modules_to_save=config.get("modules_to_save"),
        layers_to_transform=config.get("layers_to_transform"),
        layers_pattern=config.get("layers_pattern"),
        lora_bias=has_affine,
        base_model_name_or_path=config.get("base_model_name_or_path"),
        revision=config.get("revision"),
        task_type=config.get("task_type"),
        inference_mode=True,
    )
    with atomic_dir(dst) as tmp:
        lora_config.save_pretrained(str(tmp))
        save_file(out, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
    return Path(dst)
