"""LinChainConfig: the PEFT config for LinChain adapters."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Optional, Union

from peft.config import PeftConfig

from .peft_compat import LINCHAIN

__all__ = ["LINCHAIN", "MIXER_INITS", "InvalidValue", "LinChainConfig", "adapter_scaling", "names_module"]


class InvalidValue(ValueError):
    """A LinChainConfig field with a value it cannot take: the message names both, and ``field`` /
    ``value`` / ``must`` let an argument layer (``linchain train``'s flags) say the same in its terms."""

    def __init__(self, field: str, value, must: str) -> None:
        super().__init__(f"LinChainConfig.{field} must be {must}, got {field}={value!r}.")
        self.field, self.value, self.must = field, value, must


#: Valid values of ``mixer_init``.
MIXER_INITS = ("kaiming", "orthogonal", "identity")


@dataclass
class LinChainConfig(PeftConfig):
    """Configuration of a LinChain adapter.

    Each targeted frozen linear layer ``W0`` (out x in) becomes::

        y = W0 x + s * B M_k ... M_1 A dropout(x)

    with ``A``: r x in, ``M_i``: r x r (plus a bias b_i when ``mixer_bias``), ``B``: out x r and
    ``s = alpha / r`` (``alpha / sqrt(r)`` with ``use_rslora``). ``num_mixers=0`` is LoRA and
    ``num_mixers=1`` is MoSLoRA.
    """

    r: int = field(default=8, metadata={"help": "Rank r of the chain: A is r x in, each mixer r x r, B is out x r."})
    alpha: float = field(
        default=8.0,
        metadata={
            "help": "Scaling numerator: the update is multiplied by alpha / r (alpha / sqrt(r) with rsLoRA). "
            "The default is PEFT LoraConfig's lora_alpha, so LinChainConfig(num_mixers=0) scales as LoraConfig()."
        },
    )
    num_mixers: int = field(
        default=3,
        metadata={
            "help": "Chain length k >= 0: number of r x r mixers between A and B (0 = LoRA, 1 = MoSLoRA; 3 in the reference code)."
        },
    )
    mixer_bias: bool = field(
        default=False,
        metadata={
            "help": "False: the paper's purely linear chain. True: each mixer has a bias, as in the reference code "
            "(an affine chain; merging folds the constant into the base layer's bias)."
        },
    )
    mixer_init: str = field(
        default="kaiming",
        metadata={"help": f"Initialisation of the mixers, one of {MIXER_INITS} ('kaiming' as in the reference code)."},
    )
    dropout: float = field(default=0.0, metadata={"help": "Dropout probability on the adapter's input, in [0, 1)."})
    target_modules: Optional[Union[list[str], str]] = field(
        default=None,
        metadata={
            "help": "Module names (suffix match), a regex string (full match), 'all-linear', or None for the "
            "per-architecture default used by PEFT LoRA."
        },
    )
    exclude_modules: Optional[Union[list[str], str]] = field(
        default=None, metadata={"help": "Module names or a regex string of modules never to adapt."}
    )
    use_rslora: bool = field(
        default=False, metadata={"help": "Rank-stabilised scaling alpha / sqrt(r) instead of alpha / r."}
    )
    modules_to_save: Optional[list[str]] = field(
        default=None,
        metadata={"help": "Modules besides the adapters that are trained and saved (e.g. a classifier head)."},
    )
    init_weights: bool = field(
        default=True,
        metadata={
            "help": "True: B starts at zero so the adapted model starts equal to the base. False: B random too (tests, analysis)."
        },
    )
    layers_to_transform: Optional[Union[list[int], int]] = field(
        default=None, metadata={"help": "Only adapt these layer indices (as in PEFT LoRA)."}
    )
    layers_pattern: Optional[Union[list[str], str]] = field(
        default=None, metadata={"help": "Name of the layer list used with layers_to_transform (as in PEFT LoRA)."}
    )

    bias: str = field(
        default="none",
        metadata={
            "help": "Base biases to train, as LoRA's bias: 'none', 'all' (every bias in the model) or "
            "'linchain_only' (the biases of the adapted layers). Saved with the adapter."
        },
    )

    # LoraConfig fields LinChain does not support: declared so that a config written for LoRA is
    # refused by name with the way round (a dataclass would raise a bare "unexpected keyword" TypeError)
    target_parameters: Optional[list[str]] = field(
        default=None, metadata={"help": "Not supported (LoRA on nn.Parameter targets): must stay None."}
    )
    trainable_token_indices: Optional[Union[list[int], dict]] = field(
        default=None, metadata={"help": "Not supported (trainable embedding rows): must stay None."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = LINCHAIN
        for name, way_round in _UNSUPPORTED_LORA_FIELDS.items():
            if getattr(self, name) is not None:
                raise ValueError(
                    f"LinChainConfig.{name} is not supported, got {name}={getattr(self, name)!r}: {way_round}"
                )
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            raise InvalidValue("r", self.r, "a positive integer")
        if isinstance(self.num_mixers, bool) or not isinstance(self.num_mixers, int) or self.num_mixers < 0:
            raise InvalidValue("num_mixers", self.num_mixers, "an integer >= 0 (0 = LoRA, 1 = MoSLoRA)")
        if (
            not isinstance(self.alpha, (int, float))
            or isinstance(self.alpha, bool)
            or not 0 < self.alpha < math.inf  # an inf scale would pass as "positive" and train NaNs
        ):
            raise InvalidValue("alpha", self.alpha, "a positive finite number")
        if self.mixer_init not in MIXER_INITS:
            raise InvalidValue("mixer_init", self.mixer_init, f"one of {list(MIXER_INITS)}")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise InvalidValue("dropout", self.dropout, "in [0, 1)")
        for name in ("mixer_bias", "use_rslora", "init_weights"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidValue(name, getattr(self, name), "True or False")
        if self.mixer_bias and self.num_mixers == 0:
            # said, not refused: a saved adapter of this config must still load (it is LoRA)
            warnings.warn(
                "LinChainConfig.mixer_bias=True with num_mixers=0: there is no mixer to carry a bias, so it is "
                "ignored and the adapter is LoRA's; use num_mixers >= 1 for an affine chain.",
                stacklevel=3,
            )
        for name in ("target_modules", "exclude_modules"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple, set)):
                if not all(isinstance(v, str) and v for v in value):
                    raise InvalidValue(name, value, "a list of non-empty strings")
                setattr(self, name, set(value))
            elif value is not None and not isinstance(value, str):
                raise ValueError(
                    f"LinChainConfig.{name} must be a list of names, a regex string or None, got {name}={value!r}."
                )
        if self.bias not in BIAS_OPTIONS:
            raise ValueError(f"LinChainConfig.bias must be one of {list(BIAS_OPTIONS)}, got bias={self.bias!r}.")
        self._check_layer_selection()
        if self.layers_pattern and self.layers_to_transform is None:
            raise ValueError("LinChainConfig.layers_pattern is only used together with layers_to_transform.")

    def _check_layer_selection(self) -> None:
        """layers_to_transform: an index >= 0 or a list of them; layers_pattern: a name or a list of
        names. (PEFT LoRA takes ``"0"`` here and fails later with a TypeError inside get_peft_model.)"""
        layers = self.layers_to_transform

        def is_index(v: object) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= 0

        if layers is not None and not (
            is_index(layers) or (isinstance(layers, (list, tuple)) and layers and all(map(is_index, layers)))
        ):
            raise InvalidValue("layers_to_transform", layers, "a layer index >= 0 or a non-empty list of them")
        pattern = self.layers_pattern
        if pattern is not None and not (
            (isinstance(pattern, str) and pattern)
            or (isinstance(pattern, (list, tuple)) and pattern and all(isinstance(v, str) and v for v in pattern))
        ):
            raise InvalidValue("layers_pattern", pattern, "a layer list's name or a non-empty list of names")

    @property
    def scaling(self) -> float:
        """The factor s applied to the chain's output."""
        return adapter_scaling(self.alpha, self.r, self.use_rslora)


#: LinChainConfig.bias values, as LoraConfig.bias ('lora_only' is 'linchain_only' here)
BIAS_OPTIONS = ("none", "all", "linchain_only")

#: LoraConfig fields LinChain refuses, and what to use instead
_UNSUPPORTED_LORA_FIELDS = {
    "target_parameters": "LinChain adapts linear modules only; name them in target_modules (for parameters such "
    "as MoE expert weights use PEFT LoRA's target_parameters).",
    "trainable_token_indices": "train the embedding rows with PEFT's TrainableTokensConfig as a second adapter, or "
    "list the embedding in modules_to_save.",
}


def names_module(target: str, module_name: str) -> bool:
    """Whether an entry of a ``target_modules`` list names the module ``module_name`` (a full dotted
    path), by PEFT's rule for a list: the whole name, or its trailing dotted parts (``q_proj`` names
    ``model.layers.0.self_attn.q_proj``)."""
    return module_name == target or module_name.endswith("." + target)


def adapter_scaling(alpha: float, r: int, use_rslora: bool = False) -> float:
    """``s = alpha / r``, or rsLoRA's ``alpha / sqrt(r)``: the one place the formula lives (layers,
    export, analysis and saved LoRA adapters all call it)."""
    return alpha / (math.sqrt(r) if use_rslora else r)
