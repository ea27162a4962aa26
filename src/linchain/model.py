"""LinChainModel: the PEFT tuner that injects :class:`~linchain.layer.LinChainLayer` wrappers."""

from __future__ import annotations

import warnings
from typing import Optional

import torch
from peft.tuners.tuners_utils import (
    BaseTuner,
    _filter_state_dict_by_key_prefixes,
    _get_tuner_state_dict_key_prefixes,
)
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from peft.utils.error import NoMatchingPeftModuleError
from torch import nn

from .config import LinChainConfig
from .layer import SUPPORTED_BASE_LAYERS, LinChainLayer
from .quant import check_base_layer, float_dtype

__all__ = ["LinChainModel", "linear_layer_names"]

_PREFIX = "linchain_"


def linear_layer_names(model: nn.Module) -> list[str]:
    """Sorted distinct short names of the layers LinChain can wrap (e.g. ``['k_proj', 'q_proj']``)."""
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, SUPPORTED_BASE_LAYERS)})


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
            raise ValueError(
                f"LinChainConfig.target_modules={_show(config.target_modules)} matches no layer of "
                f"{type(model).__name__} (exclude_modules={_show(config.exclude_modules)}). The linear layers "
                f"that exist are: {linear_layer_names(model)}. ({err})"
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
        check_base_layer(target, current_key)  # torchao/HQQ and other foreign quantized layers: refused here, not at merge
        if not isinstance(target, SUPPORTED_BASE_LAYERS):
            raise ValueError(
                f"LinChainConfig.target_modules matched {current_key!r}, a {type(target).__name__}; LinChain wraps "
                f"only {[c.__name__ for c in SUPPORTED_BASE_LAYERS]}. Linear layers here: "
                f"{linear_layer_names(self.model)}."
            )
        new_module = LinChainLayer(target, adapter_name, **kwargs)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

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
    def _remap_adapter_state_dict_for_load(cls, model, config, adapter_name, state_dict):
        """PEFT only warns about missing adapter keys; a LinChain adapter that does not fit is an error."""
        remapped = super()._remap_adapter_state_dict_for_load(model, config, adapter_name, state_dict)
        prefixes = _get_tuner_state_dict_key_prefixes(model, adapter_name=adapter_name)
        expected = _filter_state_dict_by_key_prefixes(model.state_dict(), prefixes)
        missing = sorted(k for k in expected if k not in remapped)
        unexpected = sorted(k for k in remapped if k not in expected and f".{_PREFIX}" in k)
        mismatched = sorted(
            f"{k}: checkpoint {tuple(remapped[k].shape)} vs model {tuple(v.shape)}"
            for k, v in expected.items()
            if k in remapped and remapped[k].shape != v.shape
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
        warnings.warn(
            f"Merging the affine LinChain chain created biases in {sorted(uncovered)[:5]} (and {max(0, len(uncovered) - 5)} more) "
            f"that {type(config).__name__} cannot declare; the merged model computes the right outputs, but a "
            "save_pretrained/from_pretrained round trip would drop those biases. Use mixer_bias=False or keep the adapter unmerged.",
            stacklevel=3,
        )
    modules = dict(model.named_modules())
    for name in expected - actual:
        layer = modules[name]
        # out_features, not weight.shape: a 4-bit weight is stored packed
        out_features = layer.out_features if isinstance(layer, nn.Linear) else layer.weight.shape[1]
        layer.bias = nn.Parameter(
            torch.zeros(out_features, dtype=float_dtype(layer), device=layer.weight.device), requires_grad=False
        )
