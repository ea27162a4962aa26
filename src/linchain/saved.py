"""Reading saved adapter folders (``save_pretrained`` output) without a base model.

One reader for every consumer that works on saved factors alone: :func:`linchain.export_lora`
(LinChain -> LoRA) and :mod:`linchain.analysis` (spectra of LinChain and PEFT LoRA updates).
Each adapted layer is rebuilt as a :meth:`LinChainLayer.from_factors` layer around an empty base,
so its update comes from the same ``_fold`` / ``get_delta_weight`` as forward and merge.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterable, Optional, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .config import LINCHAIN, adapter_scaling
from .layer import LinChainLayer

__all__ = [
    "ADAPTER",
    "SavedLayer",
    "adapter_files",
    "chain_layers",
    "check_finite",
    "group_chain_tensors",
    "load_peft_adapter",
    "read_adapter",
    "saved_layers",
]

#: the adapter name the rebuilt layers use
ADAPTER = "default"
#: (layer rebuilt on an empty base, extra bias (out,) already scaled, or None): LoRA's ``lora_bias``
SavedLayer = tuple[LinChainLayer, Optional[torch.Tensor]]

_KEY = re.compile(r"^(?P<layer>.+)\.linchain_(?P<part>A|B|mixers\.(?P<idx>\d+))\.(?P<param>weight|bias)$")


def adapter_files(folder: Union[str, os.PathLike], need: str) -> tuple[Path, Path]:
    """``(adapter_config.json, adapter_model.safetensors)`` in ``folder``; FileNotFoundError saying ``need`` if absent."""
    folder = Path(folder)
    paths = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: {need}.")
    return paths


def read_adapter(
    folder: Union[str, os.PathLike], need: str, peft_types: tuple[str, ...] = (LINCHAIN, "LORA"), reader: str = "this reads"
) -> tuple[dict, dict[str, torch.Tensor], Path]:
    """``(config, tensors, weights_path)`` of a saved adapter whose ``peft_type`` is one of
    ``peft_types``; errors name the file that is wrong (``reader`` starts the peft_type message)."""
    config_path, weights_path = adapter_files(folder, need)
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{config_path}: not a valid JSON adapter config ({err}).") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: expected a JSON object, got {type(config).__name__}.")
    if config.get("peft_type") not in peft_types:
        raise ValueError(f"{config_path} has peft_type={config.get('peft_type')!r}; {reader} {' and '.join(map(repr, peft_types))} adapters.")
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{weights_path}: not a readable safetensors file ({err}).") from None
    return config, tensors, weights_path


def check_finite(named: Iterable[tuple[str, torch.Tensor]], source: str) -> None:
    """Raise ``ValueError`` naming ``source`` and the first tensor holding NaN or inf: a broken
    adapter must stop the command, not score, merge or export as if it were a result."""
    for name, tensor in named:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = "NaN" if bool(torch.isnan(tensor).any()) else "inf"
            raise ValueError(f"{source}: {name} holds {bad} values; the adapter is broken (a diverged run?) and is refused")


def group_chain_tensors(
    tensors: dict[str, torch.Tensor], source: str = "adapter"
) -> tuple[dict[str, dict], dict[str, torch.Tensor]]:
    """Group a saved LinChain state dict by adapted layer.

    Returns ``(layers, passthrough)``: ``layers[prefix] = {"A": (r, in), "B": (out, r),
    "mixers": {i: {"weight": (r, r), "bias": (r,)}}}`` keyed by the layer's module path, and the
    tensors that are not LinChain factors (``modules_to_save`` and the like). Raises
    ``ValueError`` on a ``.linchain_`` key it does not recognise; ``source`` names the file in it.
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
        scaling = adapter_scaling(config["alpha"], entry["A"].shape[0], config.get("use_rslora", False))
        mixers = [(cast(entry["mixers"][i]["weight"]), cast(entry["mixers"][i].get("bias"))) for i in sorted(entry["mixers"])]
        layers[name] = LinChainLayer.from_factors(cast(entry["A"]), mixers, cast(entry["B"]), scaling, ADAPTER)
    return layers


def _pattern_value(name: str, pattern: dict, default):
    """PEFT's rank_pattern / alpha_pattern: the first key that the layer name ends with (or equals)."""
    for key, value in (pattern or {}).items():
        if name == key or name.endswith("." + key) or name.endswith(key):
            return value
    return default


def _lora_layers(config: dict, tensors: dict[str, torch.Tensor], config_path: Path, weights_path: Path) -> dict[str, SavedLayer]:
    """A PEFT LoRA adapter as k = 0 chains with LoRA's scaling (``alpha_pattern`` honoured)."""
    if config.get("use_dora"):
        raise ValueError(f"{config_path}: DoRA adapters are not supported (their update is not s * B A).")
    groups: dict[str, dict] = {}
    for key, value in tensors.items():
        for part in ("lora_A.weight", "lora_B.weight", "lora_B.bias"):
            if key.endswith("." + part):
                groups.setdefault(key[: -len(part) - 1], {})[part] = value
    layers = {}
    for name, entry in groups.items():
        if "lora_A.weight" not in entry or "lora_B.weight" not in entry:
            raise ValueError(f"{weights_path}: layer {name!r} lacks lora_A or lora_B.")
        A, B = entry["lora_A.weight"], entry["lora_B.weight"]
        if A.dim() != 2:
            raise ValueError(f"{weights_path}: layer {name!r} is not a linear LoRA layer (lora_A is {tuple(A.shape)}).")
        alpha = _pattern_value(name, config.get("alpha_pattern"), config.get("lora_alpha", 8))
        scaling = adapter_scaling(alpha, A.shape[0], config.get("use_rslora", False))
        bias = entry.get("lora_B.bias")
        layers[name] = (LinChainLayer.from_factors(A, [], B, scaling, ADAPTER), None if bias is None else bias * scaling)
    return layers


def saved_layers(
    folder: Union[str, os.PathLike], dtype: Optional[torch.dtype] = None, need: str = "expected an adapter folder written by save_pretrained"
) -> tuple[dict, dict[str, SavedLayer]]:
    """Read a LinChain or PEFT LoRA adapter folder: ``(config, {module path as saved: (layer, extra_bias)})``.

    A LoRA adapter becomes the k = 0 chain with LoRA's scaling; ``extra_bias`` is LoRA's scaled
    ``lora_B`` bias (``lora_bias=True``), else None. ``dtype`` converts LinChain factors.
    Raises ``ValueError`` naming the file and tensor when a tensor holds NaN or inf.
    """
    config, tensors, weights_path = read_adapter(folder, need)
    check_finite(tensors.items(), str(weights_path))
    if config["peft_type"] == LINCHAIN:
        layers = {name: (layer, None) for name, layer in chain_layers(tensors, config, str(weights_path), dtype=dtype).items()}
    else:
        layers = _lora_layers(config, tensors, Path(folder) / "adapter_config.json", weights_path)
    if not layers:
        raise ValueError(f"{weights_path} holds no adapter layers.")
    return config, layers


def load_peft_adapter(model: torch.nn.Module, folder: Union[str, os.PathLike]):
    """``PeftModel.from_pretrained(model, folder)`` after checking the folder the way a user needs:
    the config is JSON naming a method PEFT knows (LINCHAIN or one of PEFT's own), the weights are
    a readable safetensors file, and every tensor is finite; each error names the file or layer."""
    from peft import PeftModel
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    from .registry import register

    register()
    known = tuple(str(getattr(k, "value", k)) for k in PEFT_TYPE_TO_CONFIG_MAPPING)
    _, tensors, weights_path = read_adapter(folder, "expected an adapter folder written by save_pretrained",
                                            peft_types=known, reader="linchain loads")
    check_finite(tensors.items(), str(weights_path))
    return PeftModel.from_pretrained(model, str(folder))
