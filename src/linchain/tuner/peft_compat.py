"""Every workaround linchain needs in PEFT (and transformers' PEFT integration), in one module.

Each one answers a PEFT limitation named in its docstring; the rest of the tuner folder
(``config``, ``layer``, ``model`` ...) is written the way PEFT's own tuners are, so upstreaming
LinChain into PEFT is copying that folder and deleting what here PEFT would then do itself:

- :class:`PeftTypeName` / :data:`LINCHAIN`: PEFT's ``PeftType`` is a closed enum;
- :func:`register`: ``register_peft_method`` only accepts members of that enum;
- :func:`tuner_state_dict_keys`: PEFT's own key filter is private;
- :func:`guard_lora_only_tools`: PEFT's free-standing LoRA tools (hot-swap, mixed models, LoRA+,
  LoRA-FA, EVA, LoftQ, ``rescale_adapter_scale``, ``get_model_status``) assume LoRA's layers or
  read ``peft_type.value``; they are wrapped to refuse by name, or to do the right thing.

Tested with the PEFT range pinned in pyproject.toml.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager, nullcontext

from torch import nn

__all__ = [
    "LINCHAIN",
    "PeftTypeName",
    "guard_lora_only_tools",
    "has_linchain",
    "lora_only",
    "register",
    "tuner_state_dict_keys",
]


class PeftTypeName(str):
    """PEFT limitation: ``PeftType`` is a closed enum, so LinChain's peft_type is a string that
    also answers ``.value``, as the enum's members do: PEFT reads ``config.peft_type.value`` in status reports and error
    messages, so a plain string would turn those into AttributeErrors."""

    @property
    def value(self) -> str:
        return str.__str__(self)


#: The peft_type string under which LinChain is registered with PEFT.
LINCHAIN = PeftTypeName("LINCHAIN")


def register() -> None:
    """Make PEFT know ``peft_type="LINCHAIN"`` (idempotent).

    PEFT limitation: ``register_peft_method`` only accepts members of its closed ``PeftType`` enum,
    so the config class, tuner class and parameter prefix go straight into the dicts of
    ``peft.mapping`` that ``get_peft_model``, saving and loading consult.
    """
    from peft import mapping

    from .config import LinChainConfig
    from .model import LinChainModel

    mapping.PEFT_TYPE_TO_CONFIG_MAPPING[LINCHAIN] = LinChainConfig
    mapping.PEFT_TYPE_TO_TUNER_MAPPING[LINCHAIN] = LinChainModel
    mapping.PEFT_TYPE_TO_PREFIX_MAPPING[LINCHAIN] = LinChainModel.prefix
    guard_lora_only_tools()


def tuner_state_dict_keys(model: nn.Module, adapter_name: str) -> dict:
    """The entries of ``model.state_dict()`` that belong to adapter ``adapter_name``, as PEFT selects
    them when it loads one. PEFT limitation: the two helpers that do it are private
    (``peft.tuners.tuners_utils._get_tuner_state_dict_key_prefixes`` / ``_filter_state_dict_by_key_prefixes``)."""
    from peft.tuners.tuners_utils import _filter_state_dict_by_key_prefixes, _get_tuner_state_dict_key_prefixes

    prefixes = _get_tuner_state_dict_key_prefixes(model, adapter_name=adapter_name)
    return _filter_state_dict_by_key_prefixes(model.state_dict(), prefixes)


def lora_only(tool: str) -> str:
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


def has_linchain(model) -> bool:
    from .layer import LinChainLayer

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
            if has_linchain(kwargs.get("model", model)):
                raise ValueError(lora_only(tool))

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
    wrap(hotswap, "check_hotswap_configs_compatible", before=refuse_configs(lora_only("hotswap_adapter")))
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
                    + lora_only("load_adapter(..., hotswap=True)")
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

    from .layer import LinChainLayer

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
        return linchain_rescale(model, multiplier) if has_linchain(model) else original(model, multiplier)

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
        if not has_linchain(model):
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
