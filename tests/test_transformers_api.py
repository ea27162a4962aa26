"""transformers' own adapter API with LinChain (issue 19 item 8): add_adapter / set_adapter /
disable_adapters / enable_adapters / active_adapters / get_adapter_state_dict / delete_adapter,
load_adapter, AutoModelForCausalLM.from_pretrained(adapter folder) and pipeline(model=adapter folder),
each against PEFT (PeftModel.from_pretrained, or PEFT LoRA with the same factors for k = 0)."""

import pytest
import torch
from peft import LoraConfig, PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

import linchain  # noqa: F401  (registers LINCHAIN with PEFT)
from linchain import LinChainConfig
from tests.conftest import tiny_llama

TARGETS = ["q_proj", "v_proj"]


def _randomise_adapter(model, name: str, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if f".{name}." in key or key.endswith(f".{name}"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.fixture
def tokens():
    return torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(0))


def test_add_set_disable_enable_delete_as_for_lora(tokens):
    base_logits = tiny_llama()(tokens).logits
    model = tiny_llama()
    model.add_adapter(LinChainConfig(r=4, alpha=8, num_mixers=0, target_modules=TARGETS), adapter_name="lc")
    model.add_adapter(
        LinChainConfig(r=4, alpha=8, num_mixers=2, mixer_bias=True, target_modules=TARGETS), adapter_name="lc2"
    )
    _randomise_adapter(model, "lc", 1)
    _randomise_adapter(model, "lc2", 2)
    lora = tiny_llama()
    lora.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS), adapter_name="lc")
    with torch.no_grad():  # PEFT LoRA with LinChain k=0's factors: the same model
        for name, module in model.named_modules():
            if hasattr(module, "linchain_A"):
                twin = lora.get_submodule(name)
                twin.lora_A["lc"].weight.copy_(module.linchain_A["lc"].weight)
                twin.lora_B["lc"].weight.copy_(module.linchain_B["lc"].weight)
    model.set_adapter("lc")
    assert model.active_adapters() == ["lc"]
    with torch.no_grad():
        k0 = model(tokens).logits
        torch.testing.assert_close(k0, lora(tokens).logits, rtol=1e-5, atol=1e-5)
        assert (k0 - base_logits).abs().max() > 1e-3
        model.set_adapter("lc2")
        k2 = model(tokens).logits
        assert (k2 - k0).abs().max() > 1e-3
        model.disable_adapters()
        torch.testing.assert_close(model(tokens).logits, base_logits)
        model.enable_adapters()
        torch.testing.assert_close(model(tokens).logits, k2)
    state = model.get_adapter_state_dict("lc2")
    assert state and all("linchain_" in k for k in state) and any("linchain_mixers" in k for k in state)
    model.delete_adapter("lc2")
    model.set_adapter("lc")
    with torch.no_grad():
        torch.testing.assert_close(model(tokens).logits, k0)


def _saved_adapter(tmp_path):
    """A base model folder (tiny Llama + tokenizer) and a LinChain k=3 affine adapter saved for it."""
    from peft import get_peft_model

    from tests.train.conftest import build_tiny_model

    base_dir = build_tiny_model(tmp_path / "base")
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(
        model, LinChainConfig(r=4, alpha=8, num_mixers=3, mixer_bias=True, target_modules=TARGETS, init_weights=False)
    )
    peft_model.peft_config["default"].base_model_name_or_path = str(base_dir)
    peft_model.save_pretrained(tmp_path / "adapter")
    return base_dir, tmp_path / "adapter"


def test_load_adapter_and_auto_model_from_an_adapter_folder(tmp_path, tokens):
    base_dir, adapter_dir = _saved_adapter(tmp_path)
    want = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir).eval()
    with torch.no_grad():
        want_logits = want(tokens).logits
        loaded = AutoModelForCausalLM.from_pretrained(base_dir)
        loaded.load_adapter(str(adapter_dir), adapter_name="lc")
        torch.testing.assert_close(loaded(tokens).logits, want_logits, rtol=1e-5, atol=1e-5)
        direct = AutoModelForCausalLM.from_pretrained(adapter_dir)  # the base named in adapter_config.json
        torch.testing.assert_close(direct(tokens).logits, want_logits, rtol=1e-5, atol=1e-5)


def test_pipeline_from_an_adapter_folder(tmp_path):
    base_dir, adapter_dir = _saved_adapter(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    want = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir).eval()
    ids = tokenizer("the cat", return_tensors="pt").input_ids
    with torch.no_grad():
        want_ids = want.generate(input_ids=ids, max_new_tokens=5, do_sample=False)
    generator = pipeline("text-generation", model=str(adapter_dir), tokenizer=tokenizer)
    out = generator("the cat", max_new_tokens=5, do_sample=False, return_tensors=True)
    assert out[0]["generated_token_ids"][-5:] == want_ids[0, -5:].tolist()


def test_transformers_hotswap_refuses_linchain_with_the_way_round(tmp_path):
    """Issue 19 item 2: transformers' own refusal ('only supported for LoRA') now also names export_lora."""
    base_dir, adapter_dir = _saved_adapter(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    model.load_adapter(str(adapter_dir), adapter_name="x")
    with pytest.raises(ValueError, match=r"only supported for LoRA, please set `hotswap=False`.*export_lora"):
        model.load_adapter(str(adapter_dir), adapter_name="x", hotswap=True)
