"""PEFT's LoRA-only tools refuse LinChain with an error naming the tool and the way round it
(``linchain.export_lora`` first); PEFT's status reports name the method."""

import peft
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils import hotswap

import linchain
from linchain import LinChainConfig
from tests.conftest import MODELS, copy_factors_to_lora


def _linchain(adapter="default"):
    build, targets = MODELS["llama"]
    return get_peft_model(
        build(),
        LinChainConfig(r=4, alpha=8, num_mixers=2, target_modules=targets, init_weights=False),
        adapter_name=adapter,
    )


def test_add_weighted_adapter_refuses_and_export_lora_is_the_way_round(tmp_path):
    model = _linchain()
    model.add_adapter("other", LinChainConfig(r=4, alpha=8, num_mixers=1, target_modules=["q_proj"]))
    with pytest.raises(NotImplementedError, match=r"add_weighted_adapter is a PEFT LoRA tool.*export_lora"):
        model.add_weighted_adapter(["default", "other"], [0.5, 0.5], "mix")
    # what the message says works: export, load as LoRA, combine there
    model.save_pretrained(tmp_path / "lc", selected_adapters=["default"])
    linchain.export_lora(tmp_path / "lc", tmp_path / "lora")
    lora = PeftModel.from_pretrained(MODELS["llama"][0](), tmp_path / "lora", adapter_name="one")
    lora.load_adapter(tmp_path / "lora", adapter_name="two")
    lora.add_weighted_adapter(["one", "two"], [0.5, 0.5], "mix", combination_type="linear")
    assert "mix" in lora.peft_config


def test_subtract_mutated_init_refuses():
    with pytest.raises(NotImplementedError, match="subtract_mutated_init.*export_lora"):
        _linchain().base_model.subtract_mutated_init({}, "default")


def test_hotswap_tools_refuse(tmp_path):
    model = _linchain()
    model.save_pretrained(tmp_path / "lc")
    message = "is a PEFT LoRA tool and does not support LinChain.*export_lora"
    with pytest.raises(ValueError, match="hotswap_adapter " + message):
        hotswap.hotswap_adapter(model, tmp_path / "lc", adapter_name="default", torch_device="cpu")
    with pytest.raises(ValueError, match="prepare_model_for_compiled_hotswap " + message):
        hotswap.prepare_model_for_compiled_hotswap(model, target_rank=8)
    with pytest.raises(ValueError, match="hotswap_adapter_from_state_dict " + message):
        hotswap.hotswap_adapter_from_state_dict(model, {}, "default", model.peft_config["default"])
    # a PEFT LoRA model asked to swap in a LinChain adapter: refused by the config check
    lora = get_peft_model(MODELS["llama"][0](), LoraConfig(r=4, target_modules=["q_proj"]))
    with pytest.raises(ValueError, match="hotswap_adapter " + message):
        hotswap.hotswap_adapter(lora, tmp_path / "lc", adapter_name="default", torch_device="cpu")


def test_mixed_model_refuses():
    with pytest.raises(ValueError, match=r"PeftMixedModel.*not LinChain"):
        get_peft_model(MODELS["llama"][0](), LinChainConfig(r=4, target_modules=["q_proj"]), mixed=True)


def test_model_and_layer_status_name_linchain():
    model = _linchain("first")
    model.add_adapter("second", LinChainConfig(r=2, num_mixers=1, target_modules=["q_proj"]))
    lora = get_peft_model(MODELS["llama"][0](), LoraConfig(r=4, target_modules=["q_proj"]))
    for status in (model.get_model_status(), peft.get_model_status(model)):
        assert status.peft_types == {"first": "LINCHAIN", "second": "LINCHAIN"}
        assert status.adapter_model_type == "LinChainModel" and status.available_adapters == ["first", "second"]
    assert lora.get_model_status().peft_types == {"default": "LORA"}  # the same field, as PEFT fills it for LoRA
    layers = model.get_layer_status()
    assert layers and all(s.module_type == "linchain.LinChainLayer" for s in layers)
    q = next(s for s in layers if s.name.endswith("q_proj"))
    assert q.available_adapters == ["first", "second"] and q.active_adapters == ["first"]
    assert next(s for s in lora.get_layer_status()).module_type == "lora.Linear"


def test_guards_are_installed_once():
    before = (hotswap.hotswap_adapter, hotswap.check_hotswap_configs_compatible, peft.get_model_status)
    linchain.register()  # registering again wraps nothing twice
    assert (hotswap.hotswap_adapter, hotswap.check_hotswap_configs_compatible, peft.get_model_status) == before


def _rates(optimizer) -> dict[int, float]:
    return {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}


@pytest.mark.parametrize("bias", [False, True])
def test_loraplus_trains_b_at_the_ratio_as_for_lora(bias):
    """LoRA+ (PEFT's create_loraplus_optimizer, from peft.optimizers or its module): linchain_B at
    lr * ratio, A and the mixers (weights and biases) at lr (issue 19 item 1; PEFT's own grouping put
    linchain_B at lr and the mixer biases at the ratio); PEFT LoRA's grouping unchanged beside it."""
    from peft.optimizers import create_loraplus_optimizer
    from peft.optimizers.loraplus import create_loraplus_optimizer as from_module

    build, targets = MODELS["llama"]
    model = get_peft_model(build(), LinChainConfig(r=4, alpha=8, num_mixers=2, mixer_bias=bias, target_modules=targets))
    for create in (create_loraplus_optimizer, from_module, peft.optimizers.create_loraplus_optimizer):
        rates = _rates(create(model, torch.optim.AdamW, lr=1e-3, loraplus_lr_ratio=16.0))
        named = {n: rates[id(p)] for n, p in model.named_parameters() if p.requires_grad}
        assert len(named) == len(rates)  # every trainable parameter, once
        for name, rate in named.items():
            want = 16e-3 if "linchain_B" in name else 1e-3
            assert rate == pytest.approx(want), name
        assert any("linchain_mixers" in n and n.endswith("bias") for n in named) == bias
    lora = get_peft_model(build(), LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    rates = _rates(create_loraplus_optimizer(lora, torch.optim.AdamW, lr=1e-3, loraplus_lr_ratio=16.0))
    for name, p in lora.named_parameters():
        if p.requires_grad:
            assert rates[id(p)] == pytest.approx(16e-3 if "lora_B" in name else 1e-3), name


@pytest.mark.parametrize("tool", ["create_lorafa_optimizer", "create_riemannian_optimizer"])
def test_lora_fa_and_riemannian_refuse_linchain(tool):
    with pytest.raises(ValueError, match=rf"{tool} is a PEFT LoRA tool.*export_lora"):
        getattr(peft.optimizers, tool)(_linchain(), torch.optim.AdamW, lr=1e-3)


def _k0_beside_lora():
    """LinChain k=0 and PEFT LoRA with the same random non-zero factors (B too): the same model."""
    build, targets = MODELS["llama"]
    ours = get_peft_model(
        build(), LinChainConfig(r=4, alpha=12, num_mixers=0, target_modules=targets, init_weights=False)
    )
    lora = get_peft_model(build(), LoraConfig(r=4, lora_alpha=12, target_modules=targets, init_lora_weights=False))
    copy_factors_to_lora(ours, lora)  # init_weights=False: B is random and non-zero too
    return ours.eval(), lora.eval()


def test_rescale_adapter_scale_and_input_casting_helpers_as_for_lora():
    """peft.helpers: rescale_adapter_scale rescales LinChain's s as LoRA's (and restores it);
    disable_input_dtype_casting runs (it raised AttributeError) and gives LoRA's output (issue 19 item 2)."""
    from peft.helpers import disable_input_dtype_casting, rescale_adapter_scale

    ours, lora = _k0_beside_lora()
    x = torch.randint(0, 97, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = ours(x).logits
        torch.testing.assert_close(before, lora(x).logits, rtol=1e-5, atol=1e-5)
        with rescale_adapter_scale(ours, 0.25), rescale_adapter_scale(lora, 0.25):
            scaled = ours(x).logits
            torch.testing.assert_close(scaled, lora(x).logits, rtol=1e-5, atol=1e-5)
        assert (scaled - before).abs().max() > 1e-4
        torch.testing.assert_close(ours(x).logits, before)  # restored
        with disable_input_dtype_casting(ours), disable_input_dtype_casting(lora):
            torch.testing.assert_close(ours(x).logits, lora(x).logits, rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="multiplier should be of type float"):
        with rescale_adapter_scale(ours, "2"):
            pass


@pytest.mark.parametrize(
    "tool", ["initialize_lora_eva_weights", "get_eva_state_dict", "replace_lora_weights_loftq", "convert_to_lora"]
)
def test_lora_initialisations_and_conversion_refuse_by_name(tool):
    with pytest.raises(ValueError, match=rf"{tool} is a PEFT LoRA tool.*export_lora"):
        getattr(peft, tool)(_linchain(), None)


def test_state_dict_without_the_prefix_is_named():
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    model = _linchain()
    state = get_peft_model_state_dict(model)
    bare = {k.removeprefix("base_model.model."): v for k, v in state.items()}
    with pytest.raises(ValueError, match=r"starts with 'base_model.model.'.*Prefix each key"):
        set_peft_model_state_dict(model, bare)
    set_peft_model_state_dict(model, state)  # with the prefix it loads


def test_linchain_onto_a_lora_layer_is_refused_by_name_and_the_reverse_works():
    """Issue 19 item 2: LinChain targeting a layer that holds a LoRA adapter said 'a Linear; LinChain wraps
    only Linear' and listed LoRA's own 'default' layers as targets."""
    from peft import inject_adapter_in_model

    build, _ = MODELS["llama"]
    with_lora = inject_adapter_in_model(LoraConfig(r=4, target_modules=["q_proj"]), build())
    with pytest.raises(
        ValueError,
        match=r"q_proj', which already holds another PEFT method's adapter "
        r"\(peft\.tuners\.lora\.layer\.Linear\).*LinChain adapter first",
    ):
        inject_adapter_in_model(LinChainConfig(r=4, target_modules=["q_proj"]), with_lora)
    with pytest.raises(
        ValueError,
        match=r"layers that exist are: \['down_proj', 'gate_proj', 'k_proj', 'lm_head', "
        r"'o_proj', 'q_proj', 'up_proj', 'v_proj'\]",
    ):
        inject_adapter_in_model(LinChainConfig(r=4, target_modules=["nope"]), with_lora)
    both = inject_adapter_in_model(
        LoraConfig(r=4, target_modules=["q_proj"]),
        inject_adapter_in_model(LinChainConfig(r=4, target_modules=["q_proj"]), build()),
    )
    assert type(both.model.layers[0].self_attn.q_proj.base_layer).__name__ == "LinChainLayer"


@pytest.mark.parametrize("fused_path", [True, False])
@pytest.mark.parametrize("k", [1, 3])
def test_rescale_to_zero_gives_the_base_model_for_an_affine_chain(k, fused_path):
    """Break-it check: ``rescale_adapter_scale(model, 0.0)`` on an affine chain divided by the scale inside
    the fused path (ZeroDivisionError); PEFT LoRA (with ``lora_bias`` too) gives the base model's output.
    Training mode, dropout on: the output and the input gradient are the base model's, exactly."""
    from peft.helpers import rescale_adapter_scale

    from linchain.tuner import fused

    build, targets = MODELS["llama"]
    model = get_peft_model(
        build(),
        LinChainConfig(
            r=4, alpha=8, num_mixers=k, mixer_bias=True, dropout=0.1, target_modules=targets, init_weights=False
        ),
    ).train()
    base = build().train()
    embeds = torch.randn(2, 6, 32, generator=torch.Generator().manual_seed(0))
    want_x = embeds.clone().requires_grad_(True)
    want = base(inputs_embeds=want_x).logits
    want.square().sum().backward()
    x = embeds.clone().requires_grad_(True)
    with rescale_adapter_scale(model, 0.0), fused.use_fused(fused_path):
        got = model(inputs_embeds=x).logits
        got.square().sum().backward()
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(x.grad, want_x.grad, rtol=0, atol=0)
    assert all(p.grad is not None for n, p in model.named_parameters() if "linchain_B" in n)


def test_layer_scale_methods_as_lora_layers_have_them():
    """Break-it check: LoRA layers' set_scale / scale_layer / unscale_layer (diffusers calls them) raised
    AttributeError on LinChain layers. With the same factors, each call gives LoRA's logits."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    ours, lora = _k0_beside_lora()
    x = torch.randint(0, 97, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        start = ours(x).logits
    calls = [("set_scale", ("default", 0.5)), ("scale_layer", (3.0,)), ("unscale_layer", (2.0,))]
    for method, args in [*calls, ("unscale_layer", (None,))]:
        for model in (ours, lora):
            for layer in model.modules():
                if isinstance(layer, BaseTunerLayer):
                    getattr(layer, method)(*args)
        with torch.no_grad():
            got = ours(x).logits
            torch.testing.assert_close(got, lora(x).logits, rtol=1e-5, atol=1e-5)
        assert (method, args) == ("unscale_layer", (None,)) or (got - start).abs().max() > 1e-4
    torch.testing.assert_close(got, start)  # unscale_layer(None): the configured alpha / r again
