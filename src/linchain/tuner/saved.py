"""Reading saved adapter folders (``save_pretrained`` output) without a base model.

One reader for every consumer that works on saved factors alone: :func:`linchain.export_lora`
(LinChain -> LoRA) and :mod:`linchain.analysis` (spectra of LinChain and PEFT LoRA updates).
Each adapted layer is rebuilt as a :meth:`LinChainLayer.from_factors` layer around an empty base,
so its update comes from the same ``_fold`` / ``get_delta_weight`` as forward and merge.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import fields
from pathlib import Path
from typing import Iterable, Optional, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .config import LINCHAIN, LinChainConfig, adapter_scaling, names_module
from .layer import LinChainLayer

__all__ = [
    "ADAPTER",
    "PEFT_FILLED_FIELDS",
    "REQUIRED_CHAIN_FIELDS",
    "SavedLayer",
    "adapter_files",
    "chain_layers",
    "check_chain_config",
    "check_config_matches",
    "check_finite",
    "check_loaded_keys",
    "group_chain_tensors",
    "load_peft_adapter",
    "module_path",
    "read_adapter",
    "require_fields",
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
    folder: Union[str, os.PathLike],
    need: str,
    peft_types: tuple[str, ...] = (LINCHAIN, "LORA"),
    reader: str = "this reads",
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
    wrong_type = ValueError(
        f"{config_path} has peft_type={_describe(config.get('peft_type'))}; {reader} "
        f"{' and '.join(map(repr, peft_types))} adapters."
    )
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError) as err:
        if config.get("peft_type") not in peft_types:
            raise wrong_type from None  # the folder is not for this reader, whatever its weights
        raise ValueError(f"{weights_path}: not a readable safetensors file ({err}).") from None
    # first whether the config describes the tensors at all: a LINCHAIN adapter whose config was
    # edited to say LORA is a broken folder, not an adapter of a type this reader does not take
    check_config_matches(config, tensors, config_path, weights_path)
    if config.get("peft_type") not in peft_types:
        raise wrong_type
    if config.get("peft_type") == LINCHAIN:
        check_chain_config(config, tensors, config_path, weights_path)
    return config, tensors, weights_path


def _describe(value) -> str:
    """A config value as the user wrote it, bounded: a config file is input, never echoed whole."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_config_matches(config: dict, tensors: dict[str, torch.Tensor], config_path: Path, weights_path: Path) -> None:
    """The one check that an adapter's ``adapter_config.json`` describes the tensors beside it.

    Every reader goes through :func:`read_adapter` (eval, merge, export-lora, analyze), so a config
    whose ``peft_type``, ``r``, ``num_mixers`` or ``mixer_bias`` disagrees with the tensors is refused
    everywhere alike. Without it PEFT builds the config's layers, finds none of the file's keys, only
    warns, and the command scores the base model (or exports a LoRA that does not load).
    Raises ``ValueError`` naming the file, the field, the config's value and what the tensors hold.
    """
    peft_type = config.get("peft_type")
    chain_keys = [k for k in tensors if ".linchain_" in k]
    lora_keys = [k for k in tensors if ".lora_A." in k or ".lora_B." in k]
    holds = "LinChain (linchain_A/B)" if chain_keys else "LoRA (lora_A/B)" if lora_keys else None
    if peft_type == LINCHAIN and not chain_keys:
        raise ValueError(
            f"{config_path}: peft_type={_describe(peft_type)} but {weights_path.name} holds "
            f"{holds or 'no LinChain'} tensors; the config does not belong to these weights"
        )
    if peft_type != LINCHAIN and chain_keys:
        raise ValueError(
            f"{config_path}: peft_type={_describe(peft_type)} but {weights_path.name} holds LinChain "
            f"(linchain_A/B) tensors; set peft_type to 'LINCHAIN' or use the config saved with them"
        )
    for field in ("alpha", "lora_alpha"):
        value = config.get(field)
        if field in config and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
        ):
            # json.loads reads NaN/Infinity: the scaling would turn every score into NaN, blamed on the weights
            raise ValueError(
                f"{config_path}: {field}={_describe(value)} is not a finite number; the adapter's "
                "scaling s = alpha / r cannot be computed"
            )
    if peft_type == LINCHAIN:
        _check_chain_fields(config, tensors, config_path, weights_path)
    elif peft_type == "LORA":
        _check_lora_rank(config, tensors, config_path, weights_path)


#: LinChain config fields every reader needs: the tensors cannot tell alpha or use_rslora, and r sets the
#: scaling and the exported LoRA's rank; a default in their place would give a silently wrong update
REQUIRED_CHAIN_FIELDS = ("r", "alpha", "use_rslora")
#: fields the tensors tell (readers of factors take them from there) but PEFT fills with LinChainConfig's
#: defaults when loading: required by :func:`load_peft_adapter`, so eval and merge name the missing field
PEFT_FILLED_FIELDS = ("num_mixers", "mixer_bias")
#: PeftConfig bookkeeping that LinChainConfig sets itself
_NOT_CHECKED = ("peft_type", "auto_mapping", "peft_version")


def require_fields(config: dict, config_path: Path, names: tuple[str, ...]) -> None:
    """``ValueError`` naming ``config_path`` and the first of ``names`` the config lacks."""
    for name in names:
        if name not in config:
            raise ValueError(
                f"{config_path} lacks {name!r}, which the LinChain adapter needs (save_pretrained writes it; "
                "was the config edited?); restore it, or use the config saved with these weights"
            )


def check_chain_config(config: dict, tensors: dict[str, torch.Tensor], config_path: Path, weights_path: Path) -> None:
    """A LINCHAIN config as :class:`LinChainConfig` would take it, before any reader uses it: the
    :data:`REQUIRED_CHAIN_FIELDS` present, every known field a value LinChainConfig accepts (export copies
    them into a LoRA config, which checks far less), and a target_modules list naming every adapted layer.
    Raises ``ValueError`` naming ``config_path`` in one line."""
    require_fields(config, config_path, REQUIRED_CHAIN_FIELDS)
    known = {f.name for f in fields(LinChainConfig) if f.init} - set(_NOT_CHECKED)
    try:
        LinChainConfig(**{k: v for k, v in config.items() if k in known})
    except (TypeError, ValueError) as err:
        raise ValueError(f"{config_path}: {' '.join(str(err).split())}") from None
    _check_targets_cover(config.get("target_modules"), tensors, config_path, weights_path)


def _check_targets_cover(targets, tensors: dict[str, torch.Tensor], config_path: Path, weights_path: Path) -> None:
    """A list of target names must match every layer the tensors adapt (PEFT's suffix match): PEFT builds
    only the listed layers and loads those, so a shorter list silently drops the rest of the adapter.
    A regex string or 'all-linear' depends on the base model's module names and is left to the loader."""
    if not isinstance(targets, list):
        return
    groups, _ = group_chain_tensors(tensors, source=str(weights_path))
    for layer in sorted(groups):
        if not any(names_module(t, layer) for t in targets):
            raise ValueError(
                f"{config_path}: target_modules={_describe(targets)} does not cover {layer}, which "
                f"{weights_path.name} adapts; a loader would drop that layer's factors silently. "
                "Use the config saved with these weights"
            )


def _mismatch(config_path: Path, field: str, value, holds: str) -> ValueError:
    return ValueError(
        f"{config_path}: {field}={_describe(value)} but the tensors hold {holds}; "
        "the config does not describe these weights (edited, or copied from another run?)"
    )


def _check_chain_fields(config: dict, tensors: dict, config_path: Path, weights_path: Path) -> None:
    """r, num_mixers and mixer_bias of a LinChain config against every layer's factors (the fields the
    config states: a hand-written config may leave them to the tensors; PEFT's loader checks the rest)."""
    groups, _ = group_chain_tensors(tensors, source=str(weights_path))
    for name, entry in sorted(groups.items()):
        if "A" not in entry or "B" not in entry:
            raise ValueError(f"{weights_path}: layer {name!r} lacks linchain_A or linchain_B.")
        rank = entry["A"].shape[0]
        if "r" in config and config["r"] != rank:
            raise _mismatch(
                config_path, "r", config.get("r"), f"rank {rank} (linchain_A of {name} is {tuple(entry['A'].shape)})"
            )
        mixers = entry["mixers"]
        if "num_mixers" in config and config["num_mixers"] != len(mixers):
            raise _mismatch(config_path, "num_mixers", config["num_mixers"], f"{len(mixers)} mixer(s) in layer {name}")
        if sorted(mixers) != list(range(len(mixers))) or any("weight" not in m for m in mixers.values()):
            raise ValueError(
                f"{weights_path}: layer {name!r} has mixers {sorted(mixers)} without a weight each; "
                "expected linchain_mixers.0 ... k-1, each with a weight"
            )
        biases = sum("bias" in m for m in mixers.values())
        if (
            mixers
            and "mixer_bias" in config
            and bool(config["mixer_bias"]) != (biases == len(mixers))
            or 0 < biases < len(mixers)
        ):
            raise _mismatch(
                config_path,
                "mixer_bias",
                config.get("mixer_bias", False),
                f"{biases} of {len(mixers)} mixer bias(es) in layer {name}",
            )


def _check_lora_rank(config: dict, tensors: dict, config_path: Path, weights_path: Path) -> None:
    """A LoRA config's r (or its rank_pattern entry) against each layer's lora_A rows."""
    for key, value in sorted(tensors.items()):
        if not key.endswith(".lora_A.weight") or value.dim() != 2:
            continue
        name = key[: -len(".lora_A.weight")]
        expected = _pattern_value(name, config.get("rank_pattern"), config.get("r", 8))
        if expected != value.shape[0]:
            field = "rank_pattern" if expected != config.get("r", 8) else "r"
            raise _mismatch(
                config_path, field, expected, f"rank {value.shape[0]} (lora_A of {name} is {tuple(value.shape)})"
            )


def check_finite(named: Iterable[tuple[str, torch.Tensor]], source: str) -> None:
    """Raise ``ValueError`` naming ``source`` and the first tensor holding NaN or inf: a broken
    adapter must stop the command, not score, merge or export as if it were a result."""
    for name, tensor in named:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = "NaN" if bool(torch.isnan(tensor).any()) else "inf"
            raise ValueError(
                f"{source}: {name} holds {bad} values; the adapter is broken (a diverged run?) and is refused"
            )


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
        mixers = [
            (cast(entry["mixers"][i]["weight"]), cast(entry["mixers"][i].get("bias"))) for i in sorted(entry["mixers"])
        ]
        layers[name] = LinChainLayer.from_factors(cast(entry["A"]), mixers, cast(entry["B"]), scaling, ADAPTER)
    return layers


def _pattern_value(name: str, pattern: dict, default):
    """PEFT's rank_pattern / alpha_pattern entry for layer ``name`` (its path in the base model), by
    PEFT's own rule (``peft.utils.other.get_pattern_key``: the first key that, as a regex, matches the
    whole name or its trailing dotted parts), else ``default``."""
    if not pattern:
        return default
    from peft.utils.other import get_pattern_key

    # saved keys carry PeftModel's "base_model.model." prefix; PEFT matched the path without it
    return pattern.get(get_pattern_key(list(pattern), module_path(name)), default)


def module_path(name: str) -> str:
    """A module path without PEFT's ``base_model.model.`` prefix: the name the user gave (and PEFT's
    rank_pattern / alpha_pattern keys match)."""
    return name.removeprefix("base_model.model.")


#: LoRA tensor names -> their role. An embedding's lora_embedding_A (r, num_embeddings) and _B (dim, r)
#: give the update (s B A)^T of the embedding matrix: the same singular values, norm and size as
#: s B A, so they are read as the A and B of a layer (before, they were skipped without a word).
_LORA_PARTS = {
    "lora_A.weight": "lora_A.weight",
    "lora_B.weight": "lora_B.weight",
    "lora_B.bias": "lora_B.bias",
    "lora_embedding_A": "lora_A.weight",
    "lora_embedding_B": "lora_B.weight",
}


def _lora_layers(
    config: dict, tensors: dict[str, torch.Tensor], config_path: Path, weights_path: Path
) -> dict[str, SavedLayer]:
    """A PEFT LoRA adapter as k = 0 chains with LoRA's scaling (``alpha_pattern`` honoured)."""
    if config.get("use_dora"):
        raise ValueError(f"{config_path}: DoRA adapters are not supported (their update is not s * B A).")
    groups: dict[str, dict] = {}
    for key, value in tensors.items():
        for part, role in _LORA_PARTS.items():
            if key.endswith("." + part):
                groups.setdefault(key[: -len(part) - 1], {})[role] = value
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
        layers[name] = (
            LinChainLayer.from_factors(A, [], B, scaling, ADAPTER),
            None if bias is None else bias * scaling,
        )
    return layers


def saved_layers(
    folder: Union[str, os.PathLike],
    dtype: Optional[torch.dtype] = None,
    need: str = "expected an adapter folder written by save_pretrained",
) -> tuple[dict, dict[str, SavedLayer]]:
    """Read a LinChain or PEFT LoRA adapter folder: ``(config, {module path as saved: (layer, extra_bias)})``.

    A LoRA adapter becomes the k = 0 chain with LoRA's scaling; ``extra_bias`` is LoRA's scaled
    ``lora_B`` bias (``lora_bias=True``), else None. ``dtype`` converts LinChain factors.
    Raises ``ValueError`` naming the file and tensor when a tensor holds NaN or inf.
    """
    config, tensors, weights_path = read_adapter(folder, need)
    check_finite(tensors.items(), str(weights_path))
    if config["peft_type"] == LINCHAIN:
        layers = {
            name: (layer, None) for name, layer in chain_layers(tensors, config, str(weights_path), dtype=dtype).items()
        }
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

    from .peft_compat import register

    register()
    known = tuple(str(getattr(k, "value", k)) for k in PEFT_TYPE_TO_CONFIG_MAPPING)
    config, tensors, weights_path = read_adapter(
        folder, "expected an adapter folder written by save_pretrained", peft_types=known, reader="linchain loads"
    )
    if config["peft_type"] == LINCHAIN:
        # PEFT fills what the config lacks with defaults, not from the tensors: name the field instead
        # of letting the loader report a shape mismatch (or, for alpha, load a wrong scaling)
        require_fields(config, Path(folder) / "adapter_config.json", PEFT_FILLED_FIELDS)
    check_finite(tensors.items(), str(weights_path))
    loaded = PeftModel.from_pretrained(model, str(folder))
    check_loaded_keys(loaded, tensors, weights_path)
    return loaded


def check_loaded_keys(model, tensors: dict[str, torch.Tensor], weights_path: Path) -> None:
    """Every adapter weight the loaded model expects came from the file, and every file tensor found a
    place: PEFT only warns about missing keys and then runs the untouched initial adapter (for LoRA,
    B = 0: the base model) as if it were the trained one. LinChain adapters are checked while loading
    (:meth:`linchain.tuner.model.LinChainModel._remap_adapter_state_dict_for_load`); this covers the others."""
    from peft.utils import get_peft_model_state_dict

    expected = set(get_peft_model_state_dict(model))
    saved = set(tensors)
    missing, unexpected = sorted(expected - saved), sorted(saved - expected)
    if missing or unexpected:
        parts = [
            f"{len(keys)} {title} (first: {keys[0]})"
            for title, keys in (("missing", missing), ("unexpected", unexpected))
            if keys
        ]
        raise ValueError(
            f"{weights_path} does not fit this base model ({type(model.get_base_model()).__name__}): "
            f"{'; '.join(parts)}; load it into the architecture it was trained on"
        )
