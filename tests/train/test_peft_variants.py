"""The PEFT LoRA variants as training methods (issue 20): dora, pissa, rslora are PEFT's own code,
built as PEFT builds them, and a PiSSA run's saved adapter fits the original base model."""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from linchain.cli.main import main as cli
from linchain.train.args import PEFT_LORA_VARIANTS, LinChainTrainingArguments, ModelArguments
from linchain.train.engine import PISSA_INIT_DIR, _save_adapter, build_model

from .conftest import base_args

TARGETS = "q_proj,v_proj"


def _ours(model_dir, method: str, out):
    model_args = ModelArguments(
        model_name_or_path=str(model_dir), method=method, r=4, alpha=8, adapter_dropout=0.0, target_modules=TARGETS
    )
    train_args = LinChainTrainingArguments(output_dir=str(out), report_to="none")
    torch.manual_seed(0)
    model, _, _ = build_model(model_args, train_args)
    return model, model_args


def _peft(model_dir, options: dict):
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    return get_peft_model(
        base,
        LoraConfig(
            r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS.split(","), task_type="CAUSAL_LM", **options
        ),
    )


@pytest.mark.parametrize("method", ["dora", "pissa", "rslora"])
def test_variants_are_built_as_peft_builds_them(method, tiny_model_dir, tmp_path):
    ours, _ = _ours(tiny_model_dir, method, tmp_path / "run")
    reference = _peft(tiny_model_dir, PEFT_LORA_VARIANTS[method])
    config = ours.peft_config["default"]
    assert (config.use_dora, config.use_rslora, config.init_lora_weights) == (
        method == "dora",
        method == "rslora",
        "pissa" if method == "pissa" else True,
    )
    trainable = {n: p.shape for n, p in ours.named_parameters() if p.requires_grad}
    assert trainable == {n: p.shape for n, p in reference.named_parameters() if p.requires_grad}
    # the same initial weights and scale as PEFT's (PiSSA's SVD and the base residual included)
    reference_state = reference.state_dict()
    for name, tensor in ours.state_dict().items():
        torch.testing.assert_close(tensor, reference_state[name], rtol=0, atol=1e-6, msg=name)
    layer = ours.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.scaling["default"] == pytest.approx(8 / 4**0.5 if method == "rslora" else 8 / 4)


def test_a_pissa_adapter_is_saved_for_the_original_base_model(tiny_model_dir, tmp_path):
    """PiSSA leaves the base holding a residual; the saved adapter (a LoRA of rank 2r) must give the
    trained model's outputs on the unchanged base, or eval and merge would score another model."""
    run = tmp_path / "run"
    model, model_args = _ours(tiny_model_dir, "pissa", run)
    assert (run / PISSA_INIT_DIR / "adapter_model.safetensors").is_file()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # "training": every adapter weight moves
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn(param.shape, generator=g))
    tokens = torch.randint(0, 97, (2, 9), generator=g)
    trained = model(tokens).logits
    _save_adapter(model, model_args, tmp_path / "adapter", run)
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] == 8
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    loaded = PeftModel.from_pretrained(base, tmp_path / "adapter")(tokens).logits
    torch.testing.assert_close(loaded, trained, rtol=0, atol=1e-4)
    # its factors are the update itself, s' B' A' = (W_res + s B A) - W (what analyze and export read);
    # the unconverted PiSSA factors are not (s B A misses the - s B0 A0 the base gave up)
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir).model.layers[0].self_attn.q_proj.weight
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    update = layer.base_layer.weight + layer.get_delta_weight("default") - original
    saved = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    converted = saved[f"{prefix}.lora_B.weight"] @ saved[f"{prefix}.lora_A.weight"] * (16 / 8)  # alpha 2*8 over r 8
    torch.testing.assert_close(converted, update, rtol=0, atol=1e-5)
    assert (layer.get_delta_weight("default") - update).abs().max() > 1e-2


def test_pissa_initialisation_is_deterministic_so_a_resume_rebuilds_the_same_base(tiny_model_dir, tmp_path):
    first, _ = _ours(tiny_model_dir, "pissa", tmp_path / "a")
    second, _ = _ours(tiny_model_dir, "pissa", tmp_path / "b")
    a, b = first.state_dict(), second.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", ["dora", "pissa"])
def test_a_variant_trains_saves_and_scores_from_the_cli(method, tiny_model_dir, even_data, tmp_path):
    out = tmp_path / "run"
    assert (
        cli(["train", *base_args(tiny_model_dir, even_data, out, "--method", method, "--target_modules", TARGETS)]) == 0
    )
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(json.loads(even_data.read_text())[:6]))
    assert (
        cli(
            [
                "eval",
                "--adapter",
                str(out),
                "--data",
                str(rows),
                "--task",
                "closed",
                "--scorer",
                "loglik",
                "--output_dir",
                str(tmp_path / "eval"),
                "--no_progress",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["tasks"][0]["total"] == 6


def test_pissa_on_a_quantized_base_is_refused_by_name():
    with pytest.raises(ValueError, match="PiSSA rewrites the base weights"):
        ModelArguments(method="pissa", load_in_4bit=True)
