"""Round trips on tiny Llama and GPT-2: merge, unmerge, unload, save/load, export_lora, several adapters."""

import contextlib
import json

import pytest
import torch
from peft import PeftModel, get_peft_model
from torch import nn
from transformers import AutoModelForCausalLM

import linchain
from linchain import LinChainConfig, LinChainLayer
from tests.conftest import MODELS, TEST_DTYPES, tiny_gpt2, tiny_llama

ATOL = 1e-5


def _randomise(model, seed=5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "linchain_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _adapted(arch, k=3, bias=False, r=4, adapter="default", seed=5, **extra):
    build, targets = MODELS[arch]
    model = get_peft_model(
        build(),
        LinChainConfig(r=r, alpha=8, num_mixers=k, mixer_bias=bias, target_modules=targets, **extra),
        adapter_name=adapter,
    )
    _randomise(model, seed)
    return model


def _logits(model, tokens):
    with torch.no_grad():
        return model(tokens).logits


CASES = [(arch, k, bias) for arch in ("llama", "gpt2") for k in (0, 1, 3) for bias in (False, True)]


@pytest.mark.device
@pytest.mark.parametrize("arch, k, bias", CASES)
def test_merge_is_exact_idempotent_and_unmerge_restores(arch, k, bias, tokens, device):
    model = _adapted(arch, k, bias).to(device)
    tokens = tokens.to(device)
    base_logits = _logits(MODELS[arch][0]().to(device), tokens)
    adapted = _logits(model, tokens)
    assert (adapted - base_logits).abs().max() > 1e-3
    weights_before = {n: p.detach().clone() for n, p in model.named_parameters() if "base_layer" in n}
    model.merge_adapter()
    torch.testing.assert_close(_logits(model, tokens), adapted, rtol=ATOL, atol=ATOL)
    merged_state = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.merge_adapter()  # merging twice changes nothing
    for n, p in model.named_parameters():
        assert torch.equal(p, merged_state[n]), n
    model.unmerge_adapter()
    for n, p in model.named_parameters():
        if n in weights_before:
            torch.testing.assert_close(p, weights_before[n], rtol=0, atol=1e-6)
    for layer in model.modules():
        if isinstance(layer, LinChainLayer) and arch == "llama":
            assert layer.base_layer.bias is None  # a bias merging created is gone again
    torch.testing.assert_close(_logits(model, tokens), adapted, rtol=ATOL, atol=ATOL)


@pytest.mark.device
@pytest.mark.parametrize("dtype", TEST_DTYPES, ids=str)
@pytest.mark.parametrize("bias", [False, True])
def test_merge_unmerge_per_dtype(dtype, bias, tokens, device):
    """Merging into a bf16/fp16 base rounds W + delta once: each layer's merged output stays within a few
    units of the dtype's eps (relative to |W + delta| |x|) of the unmerged one, and unmerging
    restores W within 2 eps of |W| + |delta| elementwise."""
    build, targets = MODELS["llama"]
    model = get_peft_model(
        build().to(device=device, dtype=dtype),
        LinChainConfig(r=4, alpha=8, num_mixers=3, mixer_bias=bias, target_modules=targets, init_weights=False),
    )
    _randomise(model)
    model.eval()
    layers = {n: m for n, m in model.named_modules() if isinstance(m, LinChainLayer)}
    seen = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, (i[0], o))) for n, m in layers.items()]
    _logits(model, tokens.to(device))
    for h in hooks:
        h.remove()
    weights = {n: m.base_layer.weight.detach().clone() for n, m in layers.items()}
    deltas = {n: m.get_delta_weight("default").to(dtype) for n, m in layers.items()}
    model.merge_adapter()
    eps = torch.finfo(dtype).eps
    with torch.no_grad():
        for n, layer in layers.items():
            x, y = seen[n]
            assert layer.merged and layer.base_layer.weight.dtype == dtype
            scale = x.double().abs() @ layer.base_layer.weight.double().abs().T + y.double().abs()
            assert ((layer(x).double() - y.double()).abs() <= 4 * eps * scale + 1e-6).all(), n
    model.unmerge_adapter()
    for n, layer in layers.items():
        restored = layer.base_layer.weight.detach().double()
        bound = 2 * eps * (weights[n].double().abs() + deltas[n].double().abs()) + 1e-12
        assert ((restored - weights[n].double()).abs() <= bound).all(), n
        assert layer.base_layer.bias is None  # a bias merging created is gone again


@pytest.mark.parametrize("arch, k, bias", CASES)
def test_merge_and_unload_saves_as_plain_transformers(arch, k, bias, tokens, tmp_path):
    model = _adapted(arch, k, bias)
    adapted = _logits(model, tokens)
    merged = model.merge_and_unload()
    assert not any(isinstance(m, LinChainLayer) for m in merged.modules())
    assert not any("linchain" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(_logits(merged, tokens), adapted, rtol=ATOL, atol=ATOL)
    merged.save_pretrained(tmp_path / "merged")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    torch.testing.assert_close(_logits(reloaded, tokens), adapted, rtol=ATOL, atol=ATOL)
    if arch == "llama" and bias and k > 0:
        assert reloaded.config.attention_bias and reloaded.config.mlp_bias


def test_unload_gives_back_the_base_model(tokens):
    model = _adapted("llama")
    base = _logits(MODELS["llama"][0](), tokens)
    plain = model.unload()
    assert not any(isinstance(m, LinChainLayer) for m in plain.modules())
    torch.testing.assert_close(_logits(plain, tokens), base, rtol=0, atol=0)


def test_safe_merge_refuses_nan(tokens):
    model = _adapted("llama")
    layer = next(m for m in model.modules() if isinstance(m, LinChainLayer))
    before = layer.base_layer.weight.detach().clone()
    with torch.no_grad():
        layer.linchain_B["default"].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaNs detected in the merged weights. The adapter default seems to be broken"):
        layer.merge(safe_merge=True)  # PEFT LoRA's words (PEFT's shared merge tests match on them)
    assert torch.equal(layer.base_layer.weight, before) and not layer.merged


@pytest.mark.parametrize("arch, k, bias", CASES)
def test_save_load_round_trip(arch, k, bias, tokens, tmp_path):
    model = _adapted(arch, k, bias)
    adapted = _logits(model, tokens)
    model.save_pretrained(tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert saved["peft_type"] == "LINCHAIN" and saved["num_mixers"] == k and saved["mixer_bias"] == bias
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    again = PeftModel.from_pretrained(MODELS[arch][0](), tmp_path / "out")
    torch.testing.assert_close(_logits(again, tokens), adapted, rtol=ATOL, atol=ATOL)
    torch.testing.assert_close(_logits(again.merge_and_unload(), tokens), adapted, rtol=ATOL, atol=ATOL)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("k", [0, 1, 3])
def test_export_lora_linear_chain_loads_in_stock_peft(arch, k, tokens, tmp_path):
    model = _adapted(arch, k, False)
    adapted = _logits(model, tokens)
    model.save_pretrained(tmp_path / "lc")
    linchain.export_lora(tmp_path / "lc", tmp_path / "lora")
    config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8
    lora = PeftModel.from_pretrained(MODELS[arch][0](), tmp_path / "lora")
    assert any("lora_A" in n for n, _ in lora.named_parameters())
    torch.testing.assert_close(_logits(lora, tokens), adapted, rtol=1e-4, atol=1e-4)


def test_export_lora_affine_chain_errors_or_uses_lora_bias(tokens, tmp_path):
    model = _adapted("llama", 3, True)
    adapted = _logits(model, tokens)
    model.save_pretrained(tmp_path / "lc")
    with pytest.raises(ValueError, match="affine"):
        linchain.export_lora(tmp_path / "lc", tmp_path / "lora")
    assert not (tmp_path / "lora").exists()
    linchain.export_lora(tmp_path / "lc", tmp_path / "lora", affine="lora_bias")
    assert json.loads((tmp_path / "lora" / "adapter_config.json").read_text())["lora_bias"] is True
    lora = PeftModel.from_pretrained(MODELS["llama"][0](), tmp_path / "lora")
    torch.testing.assert_close(_logits(lora, tokens), adapted, rtol=1e-4, atol=1e-4)


def test_export_rejects_bad_mode_and_non_linchain(tmp_path):
    with pytest.raises(ValueError, match="affine"):
        linchain.export_lora(tmp_path, tmp_path / "x", affine="bias")
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="peft_type='LORA'"):
        linchain.export_lora(tmp_path, tmp_path / "x")


def test_several_adapters_set_disable_delete(tokens):
    model = _adapted("llama", 3, False, adapter="one", seed=1)
    model.add_adapter("two", LinChainConfig(r=2, alpha=4, num_mixers=1, target_modules=["q_proj", "v_proj"]))
    _randomise(model, seed=2)
    base = _logits(MODELS["llama"][0](), tokens)
    model.set_adapter("one")
    one = _logits(model, tokens)
    model.set_adapter("two")
    two = _logits(model, tokens)
    assert (one - two).abs().max() > 1e-3 and (two - base).abs().max() > 1e-3
    with model.disable_adapter():
        torch.testing.assert_close(_logits(model, tokens), base, rtol=0, atol=0)
    torch.testing.assert_close(_logits(model, tokens), two)
    # only the active adapter trains
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".two" in n for n in trainable)
    model.delete_adapter("two")
    assert "two" not in model.peft_config
    assert not any("two" in n for n, _ in model.named_parameters())
    model.set_adapter("one")
    torch.testing.assert_close(_logits(model, tokens), one)


def test_loading_into_a_mismatched_base_fails_loudly(tmp_path):
    model = _adapted("llama")
    model.save_pretrained(tmp_path / "out")
    from transformers import LlamaConfig, LlamaForCausalLM

    bigger = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=97,
            hidden_size=64,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )
    with pytest.raises(ValueError, match="shape mismatch"):
        PeftModel.from_pretrained(bigger, tmp_path / "out")
    with pytest.raises(ValueError, match="matches no layer"):
        PeftModel.from_pretrained(MODELS["gpt2"][0](), tmp_path / "out")


def test_loading_an_adapter_with_missing_keys_fails(tmp_path):
    from safetensors.torch import load_file, save_file

    model = _adapted("llama")
    model.save_pretrained(tmp_path / "out")
    path = tmp_path / "out" / "adapter_model.safetensors"
    tensors = load_file(path)
    dropped = next(k for k in tensors if "linchain_mixers.2" in k)
    del tensors[dropped]
    save_file(tensors, path)
    with pytest.raises(ValueError, match="missing"):
        PeftModel.from_pretrained(MODELS["llama"][0](), tmp_path / "out")


def test_training_with_hf_trainer_style_loop_then_save(tmp_path, tokens):
    model = _adapted("gpt2", 3, True)
    model.print_trainable_parameters()
    n_trainable, n_all = model.get_nb_trainable_parameters()
    # per layer: r*in + k*(r*r + r) + out*r
    expected = 0
    for m in model.modules():
        if isinstance(m, LinChainLayer):
            expected += 4 * m.in_features + 3 * (16 + 4) + m.out_features * 4
    assert n_trainable == expected and n_all > n_trainable


def test_saved_keys_carry_no_adapter_name_and_load_under_another_name(tokens, tmp_path):
    from safetensors.torch import load_file

    model = _adapted("llama", 3, True, adapter="first")
    adapted = _logits(model, tokens)
    model.save_pretrained(tmp_path / "out")
    saved = tmp_path / "out" / "first" if (tmp_path / "out" / "first").exists() else tmp_path / "out"
    keys = load_file(saved / "adapter_model.safetensors")
    assert all(".first" not in k for k in keys)
    assert any(k.endswith("linchain_mixers.2.bias") for k in keys)
    other = PeftModel.from_pretrained(MODELS["llama"][0](), saved, adapter_name="second")
    torch.testing.assert_close(_logits(other, tokens), adapted, rtol=ATOL, atol=ATOL)
    other.load_adapter(saved, adapter_name="third")
    other.set_adapter("third")
    torch.testing.assert_close(_logits(other, tokens), adapted, rtol=ATOL, atol=ATOL)


def test_linear_layer_names_skip_the_adapters_own_layers():
    from peft import get_peft_model

    from linchain import LinChainConfig
    from linchain.tuner.model import linear_layer_names
    from tests.conftest import tiny_llama

    plain = linear_layer_names(tiny_llama())
    wrapped = get_peft_model(tiny_llama(), LinChainConfig(r=2, num_mixers=2, target_modules=["q_proj", "v_proj"]))
    assert linear_layer_names(wrapped) == plain and "q_proj" in plain and "0" not in plain and "base_layer" not in plain


@pytest.mark.parametrize("bias, lora_bias", [("all", "all"), ("linchain_only", "lora_only")])
def test_bias_option_trains_saves_and_exports_as_lora(bias, lora_bias, tmp_path):
    """LinChainConfig.bias as LoraConfig.bias (issue 19 item 5): the same parameters train; after one
    AdamW step k=0 and PEFT LoRA (same factors) give the same logits; save/load and export_lora keep
    the trained biases."""
    from peft import LoraConfig

    torch.manual_seed(0)
    ours = get_peft_model(tiny_gpt2(), LinChainConfig(r=4, alpha=8, num_mixers=0, target_modules=["c_attn"], bias=bias))
    lora = get_peft_model(
        tiny_gpt2(), LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], bias=lora_bias, fan_in_fan_out=True)
    )
    with torch.no_grad():
        for name, layer in ours.named_modules():
            if isinstance(layer, LinChainLayer):
                twin = lora.get_submodule(name)
                twin.lora_A["default"].weight.copy_(layer.linchain_A["default"].weight)
                layer.linchain_B["default"].weight.normal_()
                twin.lora_B["default"].weight.copy_(layer.linchain_B["default"].weight)

    def trained(m):
        return sorted(n.replace("linchain_", "lora_") for n, p in m.named_parameters() if p.requires_grad)

    assert trained(ours) == trained(lora) and any(n.endswith("base_layer.bias") for n in trained(ours))
    x = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(1))
    for model in (ours, lora):
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        model(x, labels=x).loss.backward()
        opt.step()
    ours.eval(), lora.eval()
    with torch.no_grad():
        want = lora(x).logits
        torch.testing.assert_close(ours(x).logits, want, rtol=1e-5, atol=1e-5)
        assert (want - tiny_gpt2()(x).logits).abs().max() > 1e-3
    ours.save_pretrained(tmp_path / "lc")
    again = PeftModel.from_pretrained(tiny_gpt2(), tmp_path / "lc").eval()
    linchain.export_lora(tmp_path / "lc", tmp_path / "lora")
    exported = PeftModel.from_pretrained(tiny_gpt2(), tmp_path / "lora").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x).logits, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(exported(x).logits, want, rtol=1e-5, atol=1e-5)


def test_bias_option_is_validated():
    with pytest.raises(ValueError, match=r"bias must be one of \['none', 'all', 'linchain_only'\].*'lora_only'"):
        LinChainConfig(bias="lora_only")


def test_merged_affine_chain_refuses_a_save_its_config_cannot_reload(tmp_path):
    """Mistral's config has no bias flags: merging an affine chain gives its q/k/v/o biases the config
    cannot declare. The merged model still computes the adapter's outputs, and its save_pretrained
    refuses (a reload would drop the biases: other logits) instead of writing a silently different model
    (issue 19 item 3); a linear chain's merged model saves and reloads exactly."""
    from transformers import MistralConfig, MistralForCausalLM

    def base():
        torch.manual_seed(0)
        return MistralForCausalLM(
            MistralConfig(
                vocab_size=97,
                hidden_size=32,
                intermediate_size=48,
                num_hidden_layers=1,
                num_attention_heads=4,
                num_key_value_heads=2,
            )
        ).eval()

    x = torch.randint(0, 97, (2, 6), generator=torch.Generator().manual_seed(1))
    for bias in (True, False):
        model = get_peft_model(
            base(),
            LinChainConfig(
                r=4, alpha=8, num_mixers=2, mixer_bias=bias, target_modules=["q_proj", "v_proj"], init_weights=False
            ),
        ).eval()
        with torch.no_grad():
            want = model(x).logits
        with pytest.warns(UserWarning, match="save_pretrained refuses") if bias else contextlib.nullcontext():
            merged = model.merge_and_unload()
        with torch.no_grad():
            torch.testing.assert_close(merged(x).logits, want, rtol=1e-5, atol=1e-5)
        out = tmp_path / f"merged-{bias}"
        if bias:
            with pytest.raises(
                ValueError, match=r"save_pretrained refused: .*MistralConfig cannot declare.*mixer_bias=False"
            ):
                merged.save_pretrained(out)
            assert not out.exists()
        else:
            merged.save_pretrained(out)
            with torch.no_grad():
                torch.testing.assert_close(
                    AutoModelForCausalLM.from_pretrained(out)(x).logits, want, rtol=1e-5, atol=1e-5
                )


@pytest.mark.parametrize("arch", ["gpt2", "llama"])  # gpt2: the bases have biases; llama: merging creates them
@pytest.mark.parametrize("bias", ["all", "linchain_only"])
@pytest.mark.parametrize("k", [1, 3])
def test_a_save_while_merged_reloads_to_the_same_outputs(arch, bias, k, tmp_path):
    """Break-it check: saving an affine chain while merged, with the base biases saved (``bias="all"`` /
    ``"linchain_only"``), wrote the merged biases, so a reload added the chain's constant a second time
    (1e-2 off in the logits; PEFT LoRA with ``lora_bias=True`` does the same). The save writes the biases
    as they are unmerged; the live model stays merged and unchanged."""
    build, targets = MODELS[arch]
    model = get_peft_model(
        build(), LinChainConfig(r=4, alpha=8, num_mixers=k, mixer_bias=True, bias=bias, target_modules=targets)
    )
    _randomise(model)
    with torch.no_grad():  # the trained base biases differ from the fresh base's
        for name, p in model.named_parameters():
            if name.endswith("base_layer.bias"):
                p.add_(torch.randn_like(p) * 0.3)
    model.eval()
    x = torch.randint(0, 97, (2, 6), generator=torch.Generator().manual_seed(1))
    want = _logits(model, x)
    model.merge_adapter()
    merged_state = {n: t.clone() for n, t in model.state_dict().items()}
    model.save_pretrained(tmp_path / "saved")
    assert all(torch.equal(t, merged_state[n]) for n, t in model.state_dict().items())  # the save changed nothing
    torch.testing.assert_close(_logits(model, x), want, rtol=ATOL, atol=ATOL)  # still merged, same outputs
    again = PeftModel.from_pretrained(build(), tmp_path / "saved").eval()
    torch.testing.assert_close(_logits(again, x), want, rtol=ATOL, atol=ATOL)
    model.unmerge_adapter()
    torch.testing.assert_close(_logits(model, x), want, rtol=ATOL, atol=ATOL)


@pytest.mark.parametrize("k,bias", [(0, False), (2, False), (2, True)])
def test_merging_into_a_tied_lm_head_leaves_the_input_embedding_alone(k, bias, tmp_path):
    """Break-it check: with tied embeddings and ``lm_head`` targeted, merging wrote the delta into the shared
    weight, so the input embedding changed too (logits off by ~10; PEFT LoRA's merge does the same, after a
    warning). A merge now gives lm_head a weight of its own; unmerging gives the shared one back (the tie
    holds again for training); merge_and_unload's model saves untied and reloads to the same outputs."""
    model = get_peft_model(
        tiny_llama(tie_word_embeddings=True),
        LinChainConfig(
            r=4, alpha=8, num_mixers=k, mixer_bias=bias, target_modules=["lm_head", "q_proj"], init_weights=False
        ),
    ).eval()
    inner = model.base_model.model
    shared = inner.model.embed_tokens.weight
    assert inner.lm_head.base_layer.weight is shared
    before = shared.detach().clone()
    x = torch.randint(0, 97, (2, 6), generator=torch.Generator().manual_seed(1))
    want = _logits(model, x)
    model.merge_adapter()
    torch.testing.assert_close(_logits(model, x), want, rtol=ATOL, atol=ATOL)
    assert torch.equal(inner.model.embed_tokens.weight, before) and inner.lm_head.base_layer.weight is not shared
    model.merge_adapter()  # idempotent
    torch.testing.assert_close(_logits(model, x), want, rtol=ATOL, atol=ATOL)
    model.unmerge_adapter()
    assert inner.lm_head.base_layer.weight is shared and torch.equal(shared, before)
    torch.testing.assert_close(_logits(model, x), want, rtol=ATOL, atol=ATOL)
    with pytest.warns(UserWarning) if bias else contextlib.nullcontext():
        merged = model.merge_and_unload()
    torch.testing.assert_close(_logits(merged, x), want, rtol=ATOL, atol=ATOL)
    assert torch.equal(merged.model.embed_tokens.weight, before)
    if not bias:  # (an lm_head bias is not something LlamaConfig can declare: that save refuses, tested above)
        merged.save_pretrained(tmp_path / "merged")
        again = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
        torch.testing.assert_close(_logits(again, x), want, rtol=ATOL, atol=ATOL)


def test_the_out_proj_of_a_multihead_attention_is_refused_not_a_silent_no_op():
    """Break-it check: nn.MultiheadAttention reads out_proj.weight itself, so an adapter on out_proj changed
    nothing (PEFT LoRA accepts it, output unchanged), and the refusal for the MHA module listed out_proj."""

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
            self.proj = nn.Linear(8, 8)

        def forward(self, x):
            return self.proj(self.mha(x, x, x)[0])

    with pytest.raises(ValueError, match=r"'mha.out_proj', the out_proj of an nn.MultiheadAttention.*no effect"):
        get_peft_model(Attention(), LinChainConfig(r=2, target_modules=["out_proj"]))
    with pytest.raises(ValueError, match=r"matched 'mha', a MultiheadAttention.*Linear layers here: \['proj'\]"):
        get_peft_model(Attention(), LinChainConfig(r=2, target_modules=["mha"]))
    model = get_peft_model(Attention(), LinChainConfig(r=2, target_modules=["proj"]))  # a called Linear: fine
    assert isinstance(model.base_model.model.proj, LinChainLayer)


def test_a_layer_selection_that_excludes_every_target_is_named():
    """Break-it check: a layers_pattern that names no module list (``h`` on Llama) was blamed on target_modules."""
    config = LinChainConfig(r=2, target_modules=["q_proj"], layers_to_transform=[0], layers_pattern="h")
    with pytest.raises(ValueError, match=r"layers_pattern='h': the layer selection may be what excludes them"):
        get_peft_model(tiny_llama(), config)


def test_delete_adapter_leaves_nothing_of_it_on_the_layers():
    """PEFT's peer suite (test_delete_adapter_properly_cleans_up_after_itself): the per-adapter use_rslora
    record stayed behind a deleted adapter."""
    model = _adapted("llama", k=2)
    model.add_adapter("other", LinChainConfig(r=4, alpha=8, num_mixers=2, target_modules=MODELS["llama"][1]))
    model.delete_adapter("other")
    for layer in model.modules():
        if isinstance(layer, LinChainLayer):
            for name in layer.adapter_layer_names:
                assert "other" not in getattr(layer, name), name
            for name, value in vars(layer).items():  # every per-adapter record, listed for deletion or not
                assert not (isinstance(value, dict) and "other" in value), name
