"""QLinChain: LinChain adapters on quantized base layers.

bitsandbytes bases are first-class: ``Linear4bit`` (nf4 or fp4, with or without double
quantization) and ``Linear8bitLt``. The adapter's factors stay in fp32 (or bf16) and its output is
added to the quantized layer's output, so training never touches the quantized weight. Merging
cannot add a float delta to int8/packed-4-bit codes, so it goes through the dense weight::

    W = dequant(W_q);  W_q <- quant(W + s B M_k ... M_1 A);  b <- b + s B c

and unmerging subtracts the same way. Both requantize: the merged layer equals
``dequant(W_q) + delta`` only up to one quantization step, and unmerge does not give back the
original codes exactly (README, "QLinChain" gives the sizes).

torchao- and HQQ-quantized layers are refused when the adapter is injected
(:func:`check_base_layer`), recognised by their classes' module names so neither package need be
installed. bitsandbytes itself is imported only when a bitsandbytes layer is merged or a model is
loaded quantized.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal, Optional

import torch
from torch import nn

__all__ = ["bnb_kind", "check_base_layer", "dequantized_weight", "float_dtype", "load_base_model", "store_weight_"]

INSTALL_HINT = "pip install 'linchain[quant]'"

#: Quantization libraries whose layers LinChain refuses (root package of a class's module -> what it is).
_REFUSED = {"torchao": "torchao", "hqq": "HQQ"}


def bnb_kind(layer: nn.Module) -> Optional[Literal["4bit", "8bit"]]:
    """``"4bit"`` / ``"8bit"`` when ``layer`` holds a quantized bitsandbytes weight, else None.

    Judged by the weight's class name (``Params4bit`` / ``Int8Params``), as PEFT does, so that this
    works without importing bitsandbytes. An ``Int8Params`` that still holds fp16 weights
    (``has_fp16_weights=True``) is an ordinary float weight here.
    """
    weight = getattr(layer, "weight", None)
    name = type(weight).__name__
    if name == "Params4bit":
        return "4bit"
    if name == "Int8Params" and weight.dtype == torch.int8:
        return "8bit"
    return None


def _unpack_cpu_4bit_(layer: nn.Module) -> None:
    """Undo bitsandbytes' CPU inference repacking of a 4-bit weight, in place.

    On CPUs with AVX512-BF16, ``Linear4bit``'s first forward in eval mode without grad rewrites the
    weight into a kernel-specific layout (``quant_state.packing_format_for_cpu``) that
    ``dequantize_4bit`` cannot read. bitsandbytes undoes it itself before saving or moving the
    layer; we do the same before dequantizing (its next eval forward repacks).
    """
    weight = layer.weight
    if not getattr(weight.quant_state, "packing_format_for_cpu", False):
        return
    from bitsandbytes.nn import modules as bnb_modules

    unpack = getattr(bnb_modules, "_convert_weight_packed_for_cpu_inverse", None)
    if unpack is None:  # a bitsandbytes release that packs without this inverse: we cannot read the codes
        raise RuntimeError(
            f"bitsandbytes {_bnb_version()} repacked this 4-bit weight for its CPU kernel and offers no way back; "
            f"LinChain cannot merge into it. Merge before running the model in eval mode, or use bitsandbytes 0.50."
        )
    weight.data, state = unpack(weight.data, weight.quant_state)
    if state.absmax.dim() == 2:
        # bitsandbytes <= 0.50.2 restores the block scales' layout only for double-quantized weights: the
        # others stay (in / blocksize, out), transposed, and would scale the wrong blocks once a row has more
        # than one block. Flatten them back to one scale per block in row order (values are the bf16 ones
        # the packed kernel computed with).
        state.absmax = state.absmax.t().reshape(-1).float()
    weight.quant_state = layer.quant_state = state


def dequantized_weight(layer: nn.Module) -> torch.Tensor:
    """The base layer's weight as a float tensor, shaped as an unquantized layer's (out, in).

    Unquantized layers: ``layer.weight.data`` itself (no copy). bitsandbytes 4-bit: the codes
    dequantized in the dtype the weight was quantized from; 8-bit: ``codes * row_absmax / 127``
    in fp32.
    """
    kind = bnb_kind(layer)
    if kind is None:
        return layer.weight.data
    import bitsandbytes as bnb

    if kind == "4bit":
        _unpack_cpu_4bit_(layer)
        return bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state)
    # After the first forward, Linear8bitLt keeps the row scales on its state instead of the weight.
    scales = layer.weight.SCB if layer.weight.SCB is not None else layer.state.SCB
    return bnb.functional.int8_vectorwise_dequant(layer.weight.data, scales.to(layer.weight.device))


def float_dtype(layer: nn.Module) -> torch.dtype:
    """The dtype of :func:`dequantized_weight` (what a bias that merging creates is stored in)."""
    kind = bnb_kind(layer)
    if kind is None:
        return layer.weight.dtype
    if kind == "4bit":
        state = layer.weight.quant_state
        return (
            getattr(state, "original_dtype", state.dtype)
            if getattr(state, "packing_format_for_cpu", False)
            else state.dtype
        )
    return torch.float32


def store_weight_(layer: nn.Module, weight: torch.Tensor) -> None:
    """Make ``weight`` (a dense float tensor, see :func:`dequantized_weight`) the base layer's weight.

    Unquantized layers take it as is. bitsandbytes layers requantize it with their own settings
    (4-bit: quant type, block size, double quantization, storage dtype, the original dtype;
    8-bit: row-wise absmax int8, through fp16 as bitsandbytes quantizes), on the weight's device.
    """
    kind = bnb_kind(layer)
    if kind is None:
        layer.weight.data = weight
        return
    import bitsandbytes as bnb

    old = layer.weight
    if kind == "4bit":
        new = bnb.nn.Params4bit(
            weight.to(float_dtype(layer)),
            requires_grad=False,
            blocksize=old.blocksize,
            compress_statistics=old.compress_statistics,
            quant_type=old.quant_type,
            quant_storage=old.quant_storage,
            module=layer,  # the layer's own quant_state follows the new weight
        )
        layer.weight = new.to(old.device)
        return
    # Int8Params quantizes when it moves off the CPU copy it was made from
    layer.weight = bnb.nn.Int8Params(weight.to("cpu"), requires_grad=False, has_fp16_weights=old.has_fp16_weights).to(
        old.device
    )
    # drop the old codes and scales the layer cached on its state; the next forward takes the new ones
    layer.state.reset_grads()


def _quant_library(layer: nn.Module) -> Optional[str]:
    """The refused quantization library that ``layer`` (its class or its weight's class) comes from, if any."""
    classes = list(type(layer).__mro__)
    weight = getattr(layer, "weight", None)
    if isinstance(weight, torch.Tensor):
        classes += list(type(weight).__mro__)
    for cls in classes:
        root = (cls.__module__ or "").split(".", 1)[0]
        if root in _REFUSED:
            return root
    return None


def check_base_layer(layer: nn.Module, name: str) -> None:
    """Refuse, at injection, a base layer LinChain cannot merge into correctly.

    torchao and HQQ quantized layers: PEFT LoRA has dedicated code for them that LinChain lacks.
    Any other linear layer whose weight is neither floating point nor a bitsandbytes weight
    (a quantized tensor subclass of another library): merging would cast the delta to its dtype.
    """
    library = _quant_library(layer)
    what = type(layer).__name__
    weight = getattr(layer, "weight", None)
    if weight is not None and type(weight) not in (torch.Tensor, nn.Parameter):
        what += f" (weight: {type(weight).__name__})"
    if library is not None:
        raise ValueError(
            f"LinChain cannot adapt {name!r}: it is a {_REFUSED[library]}-quantized {what}, which LinChain does not support. "
            f"Quantize the base with bitsandbytes instead (BitsAndBytesConfig(load_in_4bit=True) or load_in_8bit; "
            f"`linchain train --load_in_4bit`), or apply {_REFUSED[library]} after merge_and_unload."
        )
    if isinstance(layer, nn.Linear) and bnb_kind(layer) is None and not layer.weight.dtype.is_floating_point:
        raise ValueError(
            f"LinChain cannot adapt {name!r}: a {what} holding {layer.weight.dtype} weights, a quantization LinChain "
            f"cannot merge into. Use an unquantized or a bitsandbytes-quantized base."
        )


# --------------------------------------------------------------------------------------------
# loading a quantized base for training (linchain train --load_in_4bit / --load_in_8bit)
# --------------------------------------------------------------------------------------------
def _bnb_version() -> str:
    try:
        from importlib.metadata import version

        return version("bitsandbytes")
    except Exception:
        return "(unknown version)"


def _require_bitsandbytes(flag: str) -> None:
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError(f"{flag} needs bitsandbytes, which is not installed: {INSTALL_HINT}")


def load_base_model(
    path: str, dtype: torch.dtype, model_args: Any = None, gradient_checkpointing: bool = False
) -> nn.Module:
    """``AutoModelForCausalLM.from_pretrained(path)``, quantized with bitsandbytes if ``model_args`` asks.

    With ``load_in_4bit`` / ``load_in_8bit`` this is the QLoRA recipe: the linear layers are
    loaded quantized (``BitsAndBytesConfig``), then ``peft.prepare_model_for_kbit_training`` freezes
    the model, casts its remaining fp16/bf16 weights (norms, embeddings, head) to fp32 and, with
    ``gradient_checkpointing``, turns it on. Adapters created afterwards stay fp32.
    """
    from transformers import AutoModelForCausalLM

    four, eight = getattr(model_args, "load_in_4bit", False), getattr(model_args, "load_in_8bit", False)
    if not (four or eight):
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    _require_bitsandbytes("--load_in_4bit" if four else "--load_in_8bit")
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    if four:
        config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=model_args.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=model_args.bnb_4bit_use_double_quant,
            bnb_4bit_compute_dtype=getattr(torch, model_args.bnb_4bit_compute_dtype or model_args.torch_dtype),
        )
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, quantization_config=config)
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
