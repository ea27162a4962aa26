"""LinChainModel: the PEFT tuner that injects :class:`~linchain.layer.LinChainLayer` wrappers."""

from __future__ import annotations

import functools
import warnings
from contextlib import contextmanager, nullcontext
from typing import Optional

import torch
from peft.tuners.tuners_utils import (
    BaseTuner,
    BaseTunerLayer,
    _filter_state_dict_by_key_prefixes,
    _get_tuner_state_dict_key_prefixes,
)
from peft.utils import AuxiliaryTrainingWrapper
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from peft.utils.error import NoMatchingPeftModuleError
from torch import nn

from .config import LINCHAIN, LinChainConfig
from .layer import SUPPORTED_BASE_LAYERS, LinChainLayer
from .quant import check_base_layer, float_dtype

__all__ = ["LinChainModel", "guard_lora_only_tools", "linear_layer_names"]

_PREFIX = "linchain_"


def linear_layer_names(model: nn.Module) -> list[str]:
    """Sorted distinct short names of the layers LinChain can wrap (e.g. ``['k_proj', 'q_proj']``)."""
    names = set()
    inside_adapters = [n + "." for n, m in model.named_modules() if isinstance(m, BaseTunerLayer) and n]
    for name, m in model.named_modules():
        if not isinstance(m, SUPPORTED_BASE_LAYERS) or _PREFIX in name:
            continue  # an adapter's own A/B/mixer layers are not targets
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
    def add_weighted_adapter(self, *args, **kwargs):
        """Not available: PEFT LoRA's tool combines ``lora_A``/``lora_B`` factors."""
        raise NotImplementedError(_lora_only("add_weighted_adapter"))

    def subtract_mutated_init(self, *args, **kwargs):
        """Not available: PEFT LoRA's PiSSA/OLoRA conversion."""
        raise NotImplementedError(_lora_only("subtract_mutated_init"))

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


def _lora_only(tool: str) -> str:
    return (
        f"{tool} is a PEFT LoRA tool and does not support LinChain adapters (peft_type LINCHAIN). Convert the "
        "adapter first with linchain.export_lora(src, dst) (exact for a linear chain; affine='lora_bias' for "
        f"mixer biases), load the result as a PEFT LoRA adapter and use {tool} on that."
    )


_MIXED_MODEL = (
    "get_peft_model(..., mixed=True) (PeftMixedModel) supports only PEFT's own LoRA-family tuners, not LinChain "
    "(peft_type LINCHAIN). Several LinChain adapters live in one PeftModel (add_adapter, set_adapter, "
    "adapter_names=[...] for mixed batches); or convert with linchain.export_lora(src, dst) first."
)


def _has_linchain(model) -> bool:
    return isinstance(model, nn.Module) and any(isinstance(m, LinChainLayer) for m in model.modules())


def _is_linchain_config(config) -> bool:
    return getattr(config, "peft_type", None) == LINCHAIN


def _install(owner, name: str, make) -> None:
    """Replace ``owner.name`` (a module's function or a class's method) by ``make(original)``, once:
    a replacement carries ``_linchain_guard``, so a second call leaves it; a name this PEFT or
    transformers version lacks is skipped."""
    original = getattr(owner, name, None)
    if original is None or getattr(original, "_linchain_guard", False):
        return
    replacement = make(original)
    replacement._linchain_guard = True
    setattr(owner, name, replacement)


def guard_lora_only_tools() -> None:
    """Make PEFT's free-standing LoRA-only tools refuse LinChain with a clear error, and its status report name it.

    PEFT's ``PeftType`` is a closed enum, so a LinChain config carries the plain string
    ``"LINCHAIN"``; the hot-swap and mixed-model checks then fail on ``.value`` with an
    AttributeError, and ``get_model_status()`` reports an empty peft_type. The functions are
    wrapped in their modules, the inner checks too, so a name imported before ``import linchain``
    is covered (except ``hotswap_adapter_from_state_dict``, which has no inner check to wrap).
    Idempotent; a function a PEFT version lacks is skipped.
    """
    import peft
    from peft import mixed_model, peft_model
    from peft.utils import hotswap

    def wrap(module, name: str, before=None, after=None) -> None:
        def make(original):
            @functools.wraps(original)
            def guarded(*args, **kwargs):
                if before is not None:
                    before(*args, **kwargs)
                result = original(*args, **kwargs)
                return after(result, *args, **kwargs) if after is not None else result

            return guarded

        _install(module, name, make)

    def refuse_configs(message):
        def check(*configs, **kwargs):
            if any(_is_linchain_config(c) for c in (*configs, *kwargs.values())):
                raise ValueError(message)

        return check

    def refuse_model(tool):
        def check(model=None, *args, **kwargs):
            if _has_linchain(kwargs.get("model", model)):
                raise ValueError(_lora_only(tool))

        return check

    def name_peft_types(status, model=None, *args, **kwargs):
        configs = getattr(kwargs.get("model", model), "peft_config", None)
        if isinstance(configs, dict):
            for adapter, config in configs.items():
                if _is_linchain_config(config) and adapter in status.peft_types:
                    status.peft_types[adapter] = LINCHAIN
        return status

    for tool in ("hotswap_adapter", "hotswap_adapter_from_state_dict", "prepare_model_for_compiled_hotswap"):
        wrap(hotswap, tool, before=refuse_model(tool))
    wrap(hotswap, "check_hotswap_configs_compatible", before=refuse_configs(_lora_only("hotswap_adapter")))
    wrap(hotswap, "_convert_scalings_to_tensor", before=refuse_model("prepare_model_for_compiled_hotswap"))
    wrap(mixed_model, "_check_config_compatible", before=refuse_configs(_MIXED_MODEL))
    _guard_optimizers(wrap, refuse_model)
    _guard_lora_helpers(wrap, refuse_model)
    _guard_transformers_hotswap()
    wrap(peft_model, "get_model_status", after=name_peft_types)  # what PeftModel.get_model_status() calls
    peft.get_model_status = peft_model.get_model_status


def _guard_optimizers(wrap, refuse_model) -> None:
    """PEFT's LoRA optimizers: LoRA+ learns LinChain's B at the ratio; LoRA-FA and Riemannian refuse.

    PEFT's ``create_loraplus_optimizer`` finds B by the name ``lora_B`` (and puts every 1-D parameter
    with it), so on a LinChain model it would silently train ``linchain_B`` at the base rate and the
    mixer biases at the ratio. LoRA-FA (A frozen) and the Riemannian preconditioner are defined for
    the pair (A, B) alone, with no rule for the mixers between them.
    """
    import peft.optimizers as optimizers
    from peft.optimizers import lorafa, loraplus, riemannian

    for module in (optimizers, loraplus):
        _install(module, "create_loraplus_optimizer", _linchain_loraplus)
    for module, tool in (
        (optimizers, "create_lorafa_optimizer"),
        (lorafa, "create_lorafa_optimizer"),
        (optimizers, "create_riemannian_optimizer"),
        (riemannian, "create_riemannian_optimizer"),
    ):
        wrap(module, tool, before=refuse_model(tool))


def _guard_transformers_hotswap() -> None:
    """transformers' ``load_adapter(..., hotswap=True)`` refuses every non-LoRA adapter with its own words;
    for a LinChain adapter the refusal also names the way round (``export_lora``)."""
    import inspect
    import json
    import os

    from transformers.integrations.peft import PeftAdapterMixin

    def is_linchain(source, peft_config) -> bool:
        if isinstance(peft_config, dict) and peft_config.get("peft_type") == LINCHAIN:
            return True
        path = os.path.join(str(source), "adapter_config.json") if source else ""
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f).get("peft_type") == LINCHAIN
        except (OSError, ValueError):
            return False

    def make(original):
        signature = inspect.signature(original)

        @functools.wraps(original)
        def load_adapter(self, *args, **kwargs):
            given = signature.bind_partial(self, *args, **kwargs).arguments
            if given.get("hotswap") is True and is_linchain(given.get("peft_model_id"), given.get("peft_config")):
                raise ValueError(
                    "Hotswapping is currently only supported for LoRA, please set `hotswap=False`. "
                    + _lora_only("load_adapter(..., hotswap=True)")
                )
            return original(self, *args, **kwargs)

        return load_adapter

    _install(PeftAdapterMixin, "load_adapter", make)


def _guard_lora_helpers(wrap, refuse_model) -> None:
    """PEFT helpers: ``rescale_adapter_scale`` rescales LinChain's ``scaling`` as LoRA's; EVA, LoftQ and
    ``convert_to_lora`` (LoRA initialisations / conversions) refuse by name with the way round."""
    import peft
    from peft import helpers
    from peft.tuners import lora
    from peft.tuners.lora import eva
    from peft.utils import loftq_utils

    _install(helpers, "rescale_adapter_scale", _linchain_rescale)
    for module, tool in (
        (eva, "initialize_lora_eva_weights"),
        (eva, "get_eva_state_dict"),
        (peft, "initialize_lora_eva_weights"),
        (peft, "get_eva_state_dict"),
        (loftq_utils, "replace_lora_weights_loftq"),
        (peft, "replace_lora_weights_loftq"),
        (lora, "convert_to_lora"),
        (peft, "convert_to_lora"),
    ):
        wrap(module, tool, before=refuse_model(tool))


def _linchain_rescale(original):
    """``rescale_adapter_scale(model, multiplier)`` that also rescales LinChain layers' ``scaling`` (s = alpha / r,
    applied to the chain's output as LoRA's), restoring it on exit; other models go to PEFT unchanged."""

    @contextmanager
    def linchain_rescale(model, multiplier):
        if isinstance(multiplier, bool) or not isinstance(multiplier, (float, int)):
            raise TypeError(f"Argument multiplier should be of type float, got {type(multiplier)}")
        layers = [m for m in model.modules() if isinstance(m, LinChainLayer)]
        saved = [dict(m.scaling) for m in layers]
        for m in layers:
            m.scaling = {k: v * multiplier for k, v in m.scaling.items()}
        try:
            with original(model, multiplier) if any(_is_lora_layer(m) for m in model.modules()) else nullcontext():
                yield
        finally:
            for m, scaling in zip(layers, saved):
                m.scaling = scaling

    @functools.wraps(original)
    def rescale(model, multiplier):
        return linchain_rescale(model, multiplier) if _has_linchain(model) else original(model, multiplier)

    return rescale


def _is_lora_layer(module) -> bool:
    from peft.tuners.lora import LoraLayer

    return isinstance(module, LoraLayer)


def _linchain_loraplus(original):
    """``create_loraplus_optimizer`` that, on a LinChain model, puts ``linchain_B`` in LoRA+'s B groups
    (rate ``lr * loraplus_lr_ratio``) and A and the mixers (weights and biases: inner maps, as A) at ``lr``.
    Every other trainable parameter is grouped as PEFT groups it; other models go to PEFT unchanged."""

    @functools.wraps(original)
    def create(model, optimizer_cls, *, lr: float, loraplus_lr_ratio: float, **kwargs):
        if not _has_linchain(model):
            return original(model, optimizer_cls, lr=lr, loraplus_lr_ratio=loraplus_lr_ratio, **kwargs)
        from transformers.pytorch_utils import ALL_LAYERNORM_LAYERS
        from transformers.trainer_pt_utils import get_parameter_names

        decay = {n for n in get_parameter_names(model, ALL_LAYERNORM_LAYERS) if "bias" not in n}
        weight_decay = kwargs.pop("loraplus_weight_decay", 0.0)
        kwargs.pop("loraplus_lr_embedding", None)  # LinChain adapts no embedding
        groups = {"A": [], "B": [], "B_no_decay": []}
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            inner = "linchain_A" in name or "linchain_mixers" in name
            outer = "linchain_B" in name or "lora_B" in name or (param.ndim == 1 and not inner)
            groups["A" if not outer else ("B" if name in decay else "B_no_decay")].append(param)
        optimizer = optimizer_cls(
            [
                {"params": groups["A"], "weight_decay": weight_decay, "lr": lr},
                {"params": groups["B"], "weight_decay": weight_decay, "lr": lr * loraplus_lr_ratio},
                {"params": groups["B_no_decay"], "weight_decay": 0.0, "lr": lr * loraplus_lr_ratio},
            ],
            lr=lr,
            **kwargs,
        )
        return optimizer

    return create


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
