"""Export a saved LinChain adapter as a standard PEFT LoRA adapter."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import torch
from peft import LoraConfig
from safetensors.torch import save_file

from .outputs import OutputFolder, run_of
from .tuner.config import LINCHAIN
from .tuner.saved import ADAPTER, chain_layers, check_finite, group_chain_tensors, read_adapter

__all__ = ["AFFINE_MODES", "export_lora"]

AFFINE_MODES = ("error", "lora_bias")
#: LinChainConfig.bias -> LoraConfig.bias where the names differ
_LORA_BIAS = {"linchain_only": "lora_only"}


def export_lora(
    src: Union[str, os.PathLike], dst: Union[str, os.PathLike], affine: str = "error", overwrite: bool = False
) -> Path:
    """Write the LinChain adapter in ``src`` as a stock PEFT LoRA adapter in ``dst``.

    A linear chain (``mixer_bias=False``) is exact: ``A' = M_k ... M_1 A``, ``B' = B``, same r,
    alpha and scaling, so ``B' A' = B M_k ... M_1 A``. An affine chain also has a constant term
    ``s * B c``; plain LoRA cannot express it, so by default this raises. With
    ``affine="lora_bias"`` the constant ships as the bias of ``lora_B`` (PEFT's ``lora_bias=True``,
    which PEFT scales like the rest of the update), which is exact as well.

    Returns the ``dst`` path. ``dst`` is written atomically through :class:`linchain.outputs.OutputFolder`
    (kind ``export-lora``): a non-empty ``dst`` is replaced only with ``overwrite`` and only when it holds an
    earlier export; the adapter and its run never are. Non-finite factors are refused, naming the layer.
    """
    if affine not in AFFINE_MODES:
        raise ValueError(f"affine must be one of {list(AFFINE_MODES)}, got affine={affine!r}.")
    src = Path(src)
    config, tensors, weights_path = read_adapter(
        src,
        "export_lora needs a LinChain adapter folder written by save_pretrained",
        peft_types=(LINCHAIN,),
        reader="export_lora converts",
    )

    # before any work, and locked while writing: never over the adapter or its run, only over an earlier export
    out_folder = OutputFolder(
        dst,
        "export-lora",
        flag="DST",
        overwrite=overwrite,
        command="linchain export-lora",
        inputs={"the adapter being exported": src},
        runs={"the adapter's run": run_of(src)},
    )
    out_folder.check()
    check_finite(tensors.items(), str(weights_path))
    _, passthrough = group_chain_tensors(tensors, source=str(weights_path))
    out = dict(passthrough)
    has_affine = False
    # float64 factors: folding k mixers adds no rounding of its own
    for layer_name, layer in chain_layers(tensors, config, str(weights_path), dtype=torch.float64).items():
        A_folded, c = layer._fold(ADAPTER)
        B = tensors[f"{layer_name}.linchain_B.weight"]
        # stored at least in fp32: M_k...M_1 A of a bf16/fp16 adapter rounded back to 16 bits would be
        # ~1e3 x fp32 rounding off the chain it came from (PEFT loads it into its lora_A, fp32 by default)
        a_dtype = torch.promote_types(tensors[f"{layer_name}.linchain_A.weight"].dtype, torch.float32)
        out[f"{layer_name}.lora_A.weight"] = A_folded.to(a_dtype).contiguous()
        out[f"{layer_name}.lora_B.weight"] = B.contiguous()
        if c is not None:
            has_affine = True
            out[f"{layer_name}.lora_B.bias"] = (layer.linchain_B[ADAPTER].weight @ c).to(B.dtype).contiguous()

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
        # trained base biases (LinChainConfig.bias) travel as passthrough tensors, LoRA's bias names them
        bias=_LORA_BIAS.get(config.get("bias", "none"), config.get("bias", "none")),
        base_model_name_or_path=config.get("base_model_name_or_path"),
        revision=config.get("revision"),
        task_type=config.get("task_type"),
        inference_mode=True,
    )
    with out_folder.replace_whole() as tmp:
        lora_config.save_pretrained(str(tmp))
        save_file(out, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
    return Path(dst)
