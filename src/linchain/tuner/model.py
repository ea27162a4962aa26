"""LinChainModel: the PEFT tuner that injects :class:`~linchain.tuner.layer.LinChainLayer` wrappers."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Optional

import torch
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from peft.utils import AuxiliaryTrainingWrapper
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from peft.utils.error import NoMatchingPeftModuleError
from torch import nn

from .config import LinChainConfig
from .layer import SUPPORTED_BASE_LAYERS, LinChainLayer
from .peft_compat import lora_only, tuner_state_dict_keys
from .quant import check_base_layer, float_dtype

__all__ = ["LinChainModel", "linear_layer_names"]

_PREFIX = "linchain_"


def linear_layer_names(model: nn.Module) -> list[str]:
    """Sorted distinct short names of the layers LinChain can wrap (e.g. ``['k_proj', 'q_proj']``)."""
    names = set()
    inside_adapters = [n + "." for n, m in model.named_modules() if isinstance(m, BaseTunerLayer) and n]
    attention = [n + "." for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    for name, m in model.named_modules():
        if not isinstance(m, SUPPORTED_BASE_LAYERS) or _PREFIX in name:
            continue  # an adapter's own A/B/mixer layers are not targets
        if any(name == p + "out_proj" for p in attention):
            continue  # never called by its nn.MultiheadAttention: no target
        if any(name.startswith(p) and not name.startswith(p + "base_layer") for p in inside_adapters):
            continue  # another PEFT method's own layers (LoRA's lora_A.default ...)
        parts = name.split(".")
        names.add(
            parts[-2] if parts[-1] == "base_layer" and len(parts) > 1 else parts[-1]
        )  # a wrapped layer: its own name
    return sorted(names)


class LinChainModel(BaseTuner):
    """Wraps the targeted linear layers of ``model`` with LinChain adapters.

    Created by ``peft.get_peft_model(model, LinChainConfig(...))``; merge, unload, multiple
    adapters, ``set_adapter``, ``disable_adapter`` and ``delete_adapter`` come from
    :class:`peft.tuners.tuners_utils.BaseTuner`.
    """

    prefix: str = _PREFIX
    tuner_layer_cls = LinChainLayer
    target_module_mapping = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    def inject_adapter(self, model: nn.Module, adapter_name: str, *args, **kwargs) -> None:
        try:
            super().inject_adapter(model, adapter_name, *args, **kwargs)
        except NoMatchingPeftModuleError as err:
            config = self.peft_config[adapter_name]
            layers = (
                f", layers_to_transform={_show(config.layers_to_transform)}, "
                f"layers_pattern={_show(config.layers_pattern)}: the layer selection may be what excludes them"
                if config.layers_to_transform is not None
                else ""
            )
            raise ValueError(
                f"LinChainConfig.target_modules={_show(config.target_modules)} matches no layer of "
                f"{type(model).__name__} (exclude_modules={_show(config.exclude_modules)}{layers}). The linear "
                f"layers that exist are: {linear_layer_names(model)}. ({err})"
            ) from None

    def _create_and_replace(
        self,
        peft_config: LinChainConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        parameter_name: Optional[str] = None,
    ) -> None:
        kwargs = dict(
            r=peft_config.r,
            alpha=peft_config.alpha,
            num_mixers=peft_config.num_mixers,
            mixer_bias=peft_config.mixer_bias,
            mixer_init=peft_config.mixer_init,
            dropout=peft_config.dropout,
            use_rslora=peft_config.use_rslora,
            init_weights=peft_config.init_weights,
            layer_name=current_key,
        )
        if isinstance(target, LinChainLayer):
            target.update_layer(adapter_name, **kwargs)
            return
        if isinstance(target, BaseTunerLayer):  # another PEFT method's layer (LoRA's lora.Linear ...)
            raise ValueError(
                f"LinChainConfig.target_modules matched {current_key!r}, which already holds another PEFT method's "
                f"adapter ({type(target).__module__}.{type(target).__name__}), which LinChain cannot wrap. Add the "
                "LinChain adapter first (the other method can wrap a LinChain layer), or leave this layer out "
                "(exclude_modules)."
            )
        check_base_layer(
            target, current_key
        )  # torchao/HQQ and other foreign quantized layers: refused here, not at merge
        if not isinstance(target, SUPPORTED_BASE_LAYERS):
            raise ValueError(
                f"LinChainConfig.target_modules matched {current_key!r}, a {type(target).__name__}; LinChain wraps "
                f"only {[c.__name__ for c in SUPPORTED_BASE_LAYERS]}. Linear layers here: "
                f"{linear_layer_names(self.model)}."
            )
        if isinstance(parent, nn.MultiheadAttention):
            # break-it check: nn.MultiheadAttention reads out_proj.weight itself and never calls the module, so
            # an adapter there changes nothing (PEFT LoRA accepts it with the same no-op)
            raise ValueError(
                f"LinChainConfig.target_modules matched {current_key!r}, the out_proj of an nn.MultiheadAttention, "
                "which uses its weight directly and never calls it: an adapter there would have no effect. Leave "
                "it out (exclude_modules), or target Linear layers that the model calls."
            )
        new_module = LinChainLayer(target, adapter_name, **kwargs)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    # ------------------------------------------------------------------ mixed-adapter batches
    @contextmanager
    def _enable_peft_forward_hooks(self, *args, **kwargs):
        """Route each row to its adapter: ``model(..., adapter_names=[...])`` and ``generate(..., adapter_names=...)``.

        PeftModel enters this around forward/generate. ``adapter_names`` holds one name per row,
        ``"__base__"`` for the base model; every adapter layer (and ``modules_to_save`` wrapper) gets
        it as a keyword through a forward pre-hook while the context is open. Inference only, as in
        PEFT LoRA. Beam search runs ``num_beams`` copies of each row, so each name is repeated as often.
        """
        adapter_names = kwargs.pop("adapter_names", None)
        if adapter_names is None:
            yield
            return
        if self.training:
            # PEFT LoRA's wording first (code written for LoRA matches on it), then what to do
            raise ValueError(
                "Cannot pass `adapter_names` when the model is in training mode. Mixed-adapter batches "
                "are for inference only: call model.eval() first."
            )
        if isinstance(adapter_names, str) or not all(isinstance(n, str) for n in adapter_names):
            raise TypeError(
                f"adapter_names must be a list with one adapter name (or '__base__') per row, got {adapter_names!r}."
            )
        known = set()
        for layer in self.modules():
            if isinstance(layer, LinChainLayer):
                known |= layer.linchain_A.keys()
        unknown = sorted(set(adapter_names) - known - {"__base__"})
        if unknown:
            raise ValueError(
                f"Trying to infer with non-existing adapter(s): {', '.join(unknown)}. adapter_names has unknown "
                f"adapter(s) {unknown}; this model has {sorted(known)} (and '__base__' for the base model)."
            )
        num_beams = kwargs.get("num_beams")
        if num_beams is None:  # generate(generation_config=...) can ask for beams too
            num_beams = getattr(kwargs.get("generation_config"), "num_beams", None)
        per_row = list(adapter_names)
        if isinstance(num_beams, int) and num_beams > 1:
            per_row = [name for name in adapter_names for _ in range(num_beams)]
        targets = [m for m in self.modules() if isinstance(m, (LinChainLayer, AuxiliaryTrainingWrapper))]
        handles = [m.register_forward_pre_hook(_pass_adapter_names(per_row), with_kwargs=True) for m in targets]
        encoder = _encoder_of(self.model)
        if per_row != list(adapter_names) and encoder is not None:
            # an encoder sees each input row once; only the decoder runs the beams
            handles += [
                m.register_forward_pre_hook(_pass_adapter_names(list(adapter_names)), with_kwargs=True)
                for m in encoder.modules()
                if isinstance(m, (LinChainLayer, AuxiliaryTrainingWrapper))
            ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    # ------------------------------------------------------------------ LoRA-only PEFT tools
    def _check_merge_allowed(self) -> None:
        """PEFT's checks (and its warning about tied target modules), then each adapted layer told whether its
        base weight is another module's too: runs before every merge (``merge_adapter``, ``merge_and_unload``)."""
        super()._check_merge_allowed()
        owners: dict[int, int] = {}
        for module in self.model.modules():
            for param in module._parameters.values():
                if param is not None and param.numel() and not param.is_meta:  # offloaded weights all read 0
                    owners[param.data_ptr()] = owners.get(param.data_ptr(), 0) + 1
        for module in self.model.modules():
            if isinstance(module, LinChainLayer):
                weight = module.get_base_layer().weight
                module._weight_shared = module._shared_weight is not None or owners.get(weight.data_ptr(), 0) > 1

    def add_weighted_adapter(self, *args, **kwargs):
        """Not available: PEFT LoRA's tool combines ``lora_A``/``lora_B`` factors."""
        raise NotImplementedError(lora_only("add_weighted_adapter"))

    def subtract_mutated_init(self, *args, **kwargs):
        """Not available: PEFT LoRA's PiSSA/OLoRA conversion."""
        raise NotImplementedError(lora_only("subtract_mutated_init"))

    # ------------------------------------------------------------------ saving and loading
    @classmethod
    def _remove_adapter_name_from_key(cls, key: str, adapter_name: str) -> str:
        """``...linchain_mixers.<adapter>.<i>.weight`` -> ``...linchain_mixers.<i>.weight``.

        PEFT only strips the adapter name right before the parameter name; the mixers sit one level
        deeper (a ModuleList), so their keys would otherwise carry the adapter name into the file and
        not load under another adapter name.
        """
        key = key.replace(f".{_PREFIX}mixers.{adapter_name}.", f".{_PREFIX}mixers.")
        return super()._remove_adapter_name_from_key(key, adapter_name)

    @classmethod
    def _get_adapter_state_dict(cls, model, config, adapter_name, state_dict, unwanted_adapter_names):
        """PEFT's selection, with each merged layer's base bias saved as it is unmerged (break-it check: a save
        while an affine chain was merged, ``bias="all"``, wrote the merged bias, and a reload added the chain's
        constant twice). Only entries that are the live bias itself are replaced: a state_dict the caller
        passed in is saved as given."""
        selected = super()._get_adapter_state_dict(model, config, adapter_name, state_dict, unwanted_adapter_names)
        for name, module in model.named_modules():
            if not isinstance(module, LinChainLayer) or not module.merged_adapters:
                continue
            key = f"{name}.base_layer.bias"
            bias = module.get_base_layer().bias
            if key not in selected or bias is None or selected[key].data_ptr() != bias.data_ptr():
                continue
            unmerged = module.unmerged_bias()
            if unmerged is None:
                del selected[key]  # merging created it: the unmerged layer has none
            else:
                selected[key] = unmerged
        return selected

    @classmethod
    def _remap_adapter_state_dict_for_load(cls, model, config, adapter_name, state_dict):
        """PEFT only warns about missing adapter keys; a LinChain adapter that does not fit is an error."""
        remapped = super()._remap_adapter_state_dict_for_load(model, config, adapter_name, state_dict)
        expected = tuner_state_dict_keys(model, adapter_name)
        missing = sorted(k for k in expected if k not in remapped)
        unexpected = sorted(k for k in remapped if k not in expected and f".{_PREFIX}" in k)
        mismatched = sorted(
            f"{k}: checkpoint {tuple(remapped[k].shape)} vs model {tuple(v.shape)}"
            for k, v in expected.items()
            if k in remapped and remapped[k].shape != v.shape
        )
        if missing and not any(k.startswith("base_model.model.") for k in state_dict):
            prefixed = {f"base_model.model.{k}" for k in state_dict}
            if any(k.replace(f".{adapter_name}.", ".") in prefixed or k in prefixed for k in missing):
                raise ValueError(
                    f"The LinChain adapter {adapter_name!r}: none of the {len(state_dict)} state_dict keys starts with "
                    "'base_model.model.' (first: "
                    f"{sorted(state_dict)[:1]}); set_peft_model_state_dict expects the keys get_peft_model_state_dict "
                    "returns. Prefix each key with 'base_model.model.'."
                )
        if missing or unexpected or mismatched:
            parts = []
            for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
                if keys:
                    parts.append(f"{len(keys)} {title} (first: {keys[:3]})")
            raise ValueError(
                f"The LinChain adapter {adapter_name!r} does not fit this base model ({type(model.get_base_model()).__name__ if hasattr(model, 'get_base_model') else type(model).__name__}): "
                + "; ".join(parts)
                + ". Load it into the architecture and size it was trained on."
            )
        return remapped

    # ------------------------------------------------------------------ merging: keep the config truthful
    def _unload_and_optionally_merge(self, merge=True, progressbar=False, safe_merge=False, adapter_names=None):
        model = super()._unload_and_optionally_merge(
            merge=merge, progressbar=progressbar, safe_merge=safe_merge, adapter_names=adapter_names
        )
        if merge:
            _declare_merged_biases(model)
        return model


def _pass_adapter_names(adapter_names: list[str]):
    def hook(module, args, kwargs):
        kwargs["adapter_names"] = adapter_names
        return args, kwargs

    return hook


def _encoder_of(model: nn.Module) -> Optional[nn.Module]:
    """The encoder of an encoder-decoder model, else None (transformers 5 returns the model itself then)."""
    get_encoder = getattr(model, "get_encoder", None)
    encoder = get_encoder() if callable(get_encoder) else None
    return None if encoder is model else encoder


def _show(value) -> str:
    return repr(sorted(value)) if isinstance(value, (set, frozenset)) else repr(value)


def _bias_layers(model: nn.Module) -> set[str]:
    return {n for n, m in model.named_modules() if isinstance(m, SUPPORTED_BASE_LAYERS) and m.bias is not None}


def _bias_layers_for_config(model: nn.Module, config) -> Optional[set[str]]:
    """Names of the linear layers that ``type(model)(config)`` would give a bias (built on the meta device)."""
    try:
        with torch.device("meta"):
            fresh = type(model)(config)
    except Exception:  # not a transformers model we can rebuild: nothing to check
        return None
    return _bias_layers(fresh)


def _refuse_save(model: nn.Module, problem: str) -> None:
    """Make this model object's ``save_pretrained`` raise: a round trip would silently change its outputs."""

    def save_pretrained(*args, **kwargs):
        raise ValueError(
            f"save_pretrained refused: {problem}. Keep the adapter unmerged and save it (PeftModel.save_pretrained; "
            "load it on the base with PeftModel.from_pretrained and merge after loading), or train with mixer_bias=False, "
            "whose merged model saves as a plain transformers model."
        )

    model.save_pretrained = save_pretrained  # this instance only


def _declare_merged_biases(model: nn.Module) -> None:
    """After merging an affine chain, make ``model.config`` declare the biases merging created.

    Without this, ``save_pretrained`` + ``from_pretrained`` would drop the new biases. Flags such
    as Llama's ``attention_bias``/``mlp_bias`` are switched on only where needed, and layers the
    flag covers but that have no bias get an explicit zero bias so the reload is exact.
    """
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return
    actual = _bias_layers(model)
    expected = _bias_layers_for_config(model, config)
    if expected is None or actual <= expected:
        return
    for flag in ("attention_bias", "mlp_bias", "bias", "use_bias"):
        if getattr(config, flag, None) is False:
            setattr(config, flag, True)
            candidate = _bias_layers_for_config(model, config)
            if candidate is not None and len(actual - candidate) < len(actual - expected):
                expected = candidate
            else:
                setattr(config, flag, False)
        if actual <= expected:
            break
    uncovered = actual - expected
    if uncovered:
        problem = (
            f"merging the affine LinChain chain created biases in {sorted(uncovered)[:3]} (and "
            f"{max(0, len(uncovered) - 3)} more) that {type(config).__name__} cannot declare, so a saved copy "
            "would reload without them (other outputs)"
        )
        warnings.warn(
            f"The merged model computes the right outputs, but {problem}; its save_pretrained refuses. "
            "Save the adapter instead, or train with mixer_bias=False.",
            stacklevel=3,
        )
        _refuse_save(model, problem)
    modules = dict(model.named_modules())
    for name in expected - actual:
        layer = modules[name]
        # out_features, not weight.shape: a 4-bit weight is stored packed
        out_features = layer.out_features if isinstance(layer, nn.Linear) else layer.weight.shape[1]
        layer.bias = nn.Parameter(
            torch.zeros(out_features, dtype=float_dtype(layer), device=layer.weight.device), requires_grad=False
        )
